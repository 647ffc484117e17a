;; A valid component that exports neither wasi:cli/run nor wasi:http/incoming-handler.
(component)
