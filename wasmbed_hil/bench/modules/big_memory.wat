;; big_memory: declares a minimum memory of 32 pages (2 MiB). Proves OUT_OF_MEMORY at
;; instantiation under the default 1 MiB limit, and RETURNED (0) when the limit allows it.
(module
  (memory (export "memory") 32)
  (func (export "main") (result i32)
    (i32.const 0)))
