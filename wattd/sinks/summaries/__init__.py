"""Posted summaries: the service, its ledger and its destinations."""
