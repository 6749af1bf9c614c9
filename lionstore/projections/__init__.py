"""Pure folds from records to state. No I/O: the same code serves live use and replay."""
