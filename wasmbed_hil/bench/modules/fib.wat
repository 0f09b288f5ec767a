;; fib: recursive Fibonacci. Proves real computation (many calls, fuel accounting) and is the
;; reference workload of the benchmarks. fib(n) in i32, fib_i64(n) in i64.
(module
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (result i32) (i32.lt_s (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else
        (i32.add
          (call $fib (i32.sub (local.get $n) (i32.const 1)))
          (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  (func $fib_i64 (export "fib_i64") (param $n i64) (result i64)
    (if (result i64) (i64.lt_s (local.get $n) (i64.const 2))
      (then (local.get $n))
      (else
        (i64.add
          (call $fib_i64 (i64.sub (local.get $n) (i64.const 1)))
          (call $fib_i64 (i64.sub (local.get $n) (i64.const 2))))))))
