;; spin: never returns by itself. Proves OUT_OF_FUEL, TIMED_OUT and STOPPED.
;; main: a tight loop. ticker: a loop that calls env.log("tick") on every turn, so a test can
;; see that the run started and is still making progress.
(module
  (import "env" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "tick")
  (func (export "main")
    (loop $forever
      (br $forever)))
  (func (export "ticker")
    (loop $forever
      (call $log (i32.const 0) (i32.const 4))
      (br $forever))))
