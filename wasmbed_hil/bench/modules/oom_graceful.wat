;; oom_graceful: grows memory until memory.grow returns -1, then returns the page count.
;; Proves that a module handling a failed grow is RETURNED, not OUT_OF_MEMORY.
(module
  (memory (export "memory") 1)
  (func (export "main") (result i32)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (memory.size)))
