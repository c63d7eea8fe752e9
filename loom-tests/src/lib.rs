//! Empty unless built with `--cfg loom`; the model checks live in `tests/`.
