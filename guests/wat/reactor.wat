;; A WASI reactor: `_initialize` and no `_start`; not runnable as a command.
(module
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "handle") (result i32) (i32.const 0)))
