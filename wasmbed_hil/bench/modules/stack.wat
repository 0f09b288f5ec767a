;; stack: unbounded (non-tail) recursion. Proves TRAPPED with a stack overflow.
(module
  (func $down (export "main") (result i32)
    (i32.add (call $down) (i32.const 1))))
