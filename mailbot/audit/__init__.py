"""The audit log and what is read from it: events, costs, reports and views."""
