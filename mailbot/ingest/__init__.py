"""Ingestion: mail from IMAP folders or local files into the ledger, once and only once."""
