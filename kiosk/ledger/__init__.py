"""The journal and what is read from it: the hash chain, reference data, reconciliation after a
crash."""
