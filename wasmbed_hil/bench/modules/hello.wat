;; hello: the env.log host import. main logs "hello from wasm" and returns 42.
;; echo(ptr, len) logs memory[ptr:ptr+len] as given: proves log truncation and that an
;; out-of-range ptr/len traps the module instead of crashing the host.
(module
  (import "env" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm")
  (func (export "main") (result i32)
    (call $log (i32.const 16) (i32.const 15))
    (i32.const 42))
  (func (export "echo") (param $ptr i32) (param $len i32)
    (call $log (local.get $ptr) (local.get $len))))
