;; trap: execution errors that end a run as TRAPPED, each with its own trap code.
;; main: unreachable; divzero: integer division by zero; oob: load outside the memory.
(module
  (memory (export "memory") 1)
  (global $zero (mut i32) (i32.const 0))
  (func (export "main")
    unreachable)
  (func (export "divzero") (result i32)
    (i32.div_s (i32.const 1) (global.get $zero)))
  (func (export "oob") (result i32)
    (i32.load (i32.const 65536))))
