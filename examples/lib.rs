//! Runnable examples of ParagoN Edge; see `examples/README.md`. This library is empty:
//! each example is its own file.
