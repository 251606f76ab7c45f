"""Data: the dataset registry (:mod:`.sources`) and verified downloads (:mod:`.download`)."""
