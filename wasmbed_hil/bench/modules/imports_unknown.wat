;; imports_unknown: imports env.nope, which the runtime does not offer. Proves LOAD_FAILED.
(module
  (import "env" "nope" (func $nope))
  (func (export "main") (result i32)
    (call $nope)
    (i32.const 0)))
