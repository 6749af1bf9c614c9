"""Processor and Executor (seeds/processor-executor.txt) on the log."""
