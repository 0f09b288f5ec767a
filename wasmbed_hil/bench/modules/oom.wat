;; oom: grows memory one page at a time until memory.grow returns -1 (the memory limit), then
;; gives up with unreachable. Proves OUT_OF_MEMORY for a module that traps at the limit.
(module
  (memory (export "memory") 1)
  (func (export "main")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
