"""Reply drafting: templates filled with extracted fields and knowledge-base passages,
the reply as a threaded MIME message, and its delivery into the Drafts folder."""
