"""zrelay benchmark suite (run it with ``python bench/run.py``)."""
