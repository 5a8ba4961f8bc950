;; Row hash: the content hash of a stream of PostgreSQL COPY text-format rows, computed as the
;; bytes pass.
;;
;; Capture hashes what COPY ... TO STDOUT sends it; restore hashes the lines it sends to
;; COPY ... FROM STDIN, and, when it must, what the loaded table sends back. Each row is decoded
;; into its fields (tab-separated, newline-terminated; \N alone is NULL; \\ \n \r \t \b \f \v are
;; escapes) and hashed:
;;
;;   field  → its decoded bytes as little-endian 64-bit words (a last partial word zero-padded
;;            above), then one tag word 0xFF00_0000_0000_0000 | null << 8 | (bytes in the partial
;;            word); the top byte of a data word is a data byte or zero, and 0xFF never occurs in
;;            UTF-8, so a tag is not mistaken for data;
;;   word   → h = (h xor word) * 0x9E3779B97F4A7C15; h = h xor (h >> 32)   (h starts at 0x243F6A8885A308D3)
;;   row    → MurmurHash3's fmix64 of h, added to a 128-bit sum (order-independent).
;;
;; Runs of ordinary bytes are taken eight at a time: a 64-bit load and a SWAR test for the bytes
;; that end a field or start an escape (about twice as fast as byte by byte).
;;
;; The caller copies each chunk of the stream to offset 0 of memory and calls update(length);
;; all state lives in globals, so rows may span chunks. reset() starts a new stream.
;;
;; Anything the decoder does not read exactly as PostgreSQL's COPY FROM would (octal and hex
;; escapes, \. , text after \N, a raw carriage return) sets `inconclusive`: such a stream's hash
;; is never trusted, so a decoding gap can only cause a slower check, never a false match.
(module
  (memory (export "memory") 1)

  (global $h (mut i64) (i64.const 0x243f6a8885a308d3))
  (global $acc (mut i64) (i64.const 0))
  (global $accBytes (mut i32) (i32.const 0))
  ;; bit 0: the field has bytes; bit 2: the field is NULL (\N).
  (global $field (mut i32) (i32.const 0))
  ;; 0 normal, 1 right after a backslash.
  (global $escaped (mut i32) (i32.const 0))
  (global $streamBytes (mut i64) (i64.const 0))
  (global $rowStart (mut i64) (i64.const 0))
  (global $maxRowBytes (export "maxRowBytes") (mut i64) (i64.const 0))
  (global $rows (export "rows") (mut i64) (i64.const 0))
  (global $sumLo (export "sumLo") (mut i64) (i64.const 0))
  (global $sumHi (export "sumHi") (mut i64) (i64.const 0))
  (global $inconclusive (export "inconclusive") (mut i32) (i32.const 0))

  (func (export "reset")
    (global.set $h (i64.const 0x243f6a8885a308d3))
    (global.set $acc (i64.const 0))
    (global.set $accBytes (i32.const 0))
    (global.set $field (i32.const 0))
    (global.set $escaped (i32.const 0))
    (global.set $streamBytes (i64.const 0))
    (global.set $rowStart (i64.const 0))
    (global.set $maxRowBytes (i64.const 0))
    (global.set $rows (i64.const 0))
    (global.set $sumLo (i64.const 0))
    (global.set $sumHi (i64.const 0))
    (global.set $inconclusive (i32.const 0)))

  ;; 1 when the stream so far ends exactly after a complete row.
  (func (export "atRowBoundary") (result i32)
    (i32.and
      (i64.eq (global.get $streamBytes) (global.get $rowStart))
      (i32.eqz (global.get $escaped))))

  (func $mix (param $h i64) (param $word i64) (result i64)
    (local $x i64)
    (local.set $x (i64.mul (i64.xor (local.get $h) (local.get $word)) (i64.const 0x9e3779b97f4a7c15)))
    (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 32))))

  ;; 0x80 in the bytes of $x that are zero (exact for the lowest one; higher ones may be false).
  (func $zeroBytes (param $x i64) (result i64)
    (i64.and
      (i64.and (i64.sub (local.get $x) (i64.const 0x0101010101010101)) (i64.xor (local.get $x) (i64.const -1)))
      (i64.const 0x8080808080808080)))

  ;; The bytes of $v the state machine must see: tab, newline, backslash, carriage return.
  (func $stops (param $v i64) (result i64)
    (i64.or
      (i64.or
        (call $zeroBytes (i64.xor (local.get $v) (i64.const 0x0909090909090909)))
        (call $zeroBytes (i64.xor (local.get $v) (i64.const 0x0a0a0a0a0a0a0a0a))))
      (i64.or
        (call $zeroBytes (i64.xor (local.get $v) (i64.const 0x5c5c5c5c5c5c5c5c)))
        (call $zeroBytes (i64.xor (local.get $v) (i64.const 0x0d0d0d0d0d0d0d0d))))))

  ;; Append $k (1..8) value bytes, the low bytes of $bytes (the rest zero), to the field's
  ;; pending word ($acc holding $n bytes); a word that fills up is mixed in.
  (func $absorb (param $h i64) (param $acc i64) (param $n i32) (param $bytes i64) (param $k i32) (result i64 i64 i32)
    (local $total i32) (local $word i64)
    (local.set $total (i32.add (local.get $n) (local.get $k)))
    (local.set $word
      (if (result i64) (local.get $n)
        (then (i64.or (local.get $acc) (i64.shl (local.get $bytes) (i64.extend_i32_u (i32.shl (local.get $n) (i32.const 3))))))
        (else (local.get $bytes))))
    (if (i32.lt_u (local.get $total) (i32.const 8))
      (then (return (local.get $h) (local.get $word) (local.get $total))))
    (local.set $h (call $mix (local.get $h) (local.get $word)))
    (if (i32.eq (local.get $total) (i32.const 8))
      (then (return (local.get $h) (i64.const 0) (i32.const 0))))
    ;; More than 8: $n ≥ 1, and the top $total - 8 bytes of $bytes start the next word.
    (return
      (local.get $h)
      (i64.shr_u (local.get $bytes) (i64.extend_i32_u (i32.shl (i32.sub (i32.const 8) (local.get $n)) (i32.const 3))))
      (i32.sub (local.get $total) (i32.const 8))))

  ;; Mix in what is left of the field and its tag.
  (func $endField (param $h i64) (param $acc i64) (param $n i32) (param $field i32) (result i64)
    (if (local.get $n) (then (local.set $h (call $mix (local.get $h) (local.get $acc)))))
    (call $mix (local.get $h)
      (i64.or (i64.const 0xff00000000000000)
        (i64.extend_i32_u (i32.or (local.get $n) (i32.shl (i32.and (local.get $field) (i32.const 4)) (i32.const 6)))))))

  ;; Finish a row whose last byte (its newline) is at chunk offset $end - 1.
  (func $endRow (param $h i64) (param $end i32)
    (local $k i64) (local $rowBytes i64) (local $next i64)
    (local.set $k (local.get $h))
    (local.set $k (i64.mul (i64.xor (local.get $k) (i64.shr_u (local.get $k) (i64.const 33))) (i64.const 0xff51afd7ed558ccd)))
    (local.set $k (i64.mul (i64.xor (local.get $k) (i64.shr_u (local.get $k) (i64.const 33))) (i64.const 0xc4ceb9fe1a85ec53)))
    (local.set $k (i64.xor (local.get $k) (i64.shr_u (local.get $k) (i64.const 33))))
    (global.set $sumLo (i64.add (global.get $sumLo) (local.get $k)))
    (if (i64.lt_u (global.get $sumLo) (local.get $k))
      (then (global.set $sumHi (i64.add (global.get $sumHi) (i64.const 1)))))
    (global.set $rows (i64.add (global.get $rows) (i64.const 1)))
    (local.set $next (i64.add (global.get $streamBytes) (i64.extend_i32_u (local.get $end))))
    (local.set $rowBytes (i64.sub (local.get $next) (global.get $rowStart)))
    (if (i64.gt_u (local.get $rowBytes) (global.get $maxRowBytes))
      (then (global.set $maxRowBytes (local.get $rowBytes))))
    (global.set $rowStart (local.get $next)))

  (func (export "update") (param $len i32)
    (local $i i32) (local $b i32) (local $h i64) (local $acc i64) (local $n i32) (local $field i32) (local $escaped i32)
    (local $v i64) (local $stops i64) (local $k i32)
    (local.set $h (global.get $h))
    (local.set $acc (global.get $acc))
    (local.set $n (global.get $accBytes))
    (local.set $field (global.get $field))
    (local.set $escaped (global.get $escaped))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        ;; Fast path: of the next eight bytes, take those before the first the state machine needs.
        (if (i32.and (i32.eqz (local.get $escaped)) (i32.le_u (i32.add (local.get $i) (i32.const 8)) (local.get $len)))
          (then
            (local.set $v (i64.load (local.get $i)))
            (local.set $stops (call $stops (local.get $v)))
            (local.set $k
              (if (result i32) (i64.eqz (local.get $stops))
                (then (i32.const 8))
                (else (i32.wrap_i64 (i64.shr_u (i64.ctz (local.get $stops)) (i64.const 3))))))
            (if (local.get $k)
              (then
                (call $absorb (local.get $h) (local.get $acc) (local.get $n)
                  (if (result i64) (i32.eq (local.get $k) (i32.const 8))
                    (then (local.get $v))
                    (else (i64.and (local.get $v)
                      (i64.sub (i64.shl (i64.const 1) (i64.extend_i32_u (i32.shl (local.get $k) (i32.const 3)))) (i64.const 1)))))
                  (local.get $k))
                (local.set $n)
                (local.set $acc)
                (local.set $h)
                ;; Nothing may follow \N in its field.
                (if (i32.and (local.get $field) (i32.const 4)) (then (global.set $inconclusive (i32.const 1))))
                (local.set $field (i32.or (local.get $field) (i32.const 1)))
                (local.set $i (i32.add (local.get $i) (local.get $k)))
                (br $next)))))
        ;; One byte through the state machine.
        (local.set $b (i32.load8_u (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (block $emit
          (if (local.get $escaped)
            (then
              (local.set $escaped (i32.const 0))
              (if (i32.eq (local.get $b) (i32.const 78)) ;; \N: NULL, and nothing else in the field
                (then
                  (if (local.get $field) (then (global.set $inconclusive (i32.const 1))))
                  (local.set $field (i32.const 4))
                  (br $next)))
              (if (i32.eq (local.get $b) (i32.const 92)) (then (br $emit)))
              (if (i32.eq (local.get $b) (i32.const 110)) (then (local.set $b (i32.const 10)) (br $emit)))
              (if (i32.eq (local.get $b) (i32.const 114)) (then (local.set $b (i32.const 13)) (br $emit)))
              (if (i32.eq (local.get $b) (i32.const 116)) (then (local.set $b (i32.const 9)) (br $emit)))
              (if (i32.eq (local.get $b) (i32.const 98)) (then (local.set $b (i32.const 8)) (br $emit)))
              (if (i32.eq (local.get $b) (i32.const 102)) (then (local.set $b (i32.const 12)) (br $emit)))
              (if (i32.eq (local.get $b) (i32.const 118)) (then (local.set $b (i32.const 11)) (br $emit)))
              ;; Octal, hex, \. and the rest: not decoded here.
              (global.set $inconclusive (i32.const 1))
              (br $emit)))
          (if (i32.eq (local.get $b) (i32.const 92)) (then (local.set $escaped (i32.const 1)) (br $next)))
          (if (i32.eq (local.get $b) (i32.const 13)) (then (global.set $inconclusive (i32.const 1))))
          (br_if $emit (i32.and (i32.ne (local.get $b) (i32.const 9)) (i32.ne (local.get $b) (i32.const 10))))
          ;; The end of a field (and, at a newline, of the row).
          (local.set $h (call $endField (local.get $h) (local.get $acc) (local.get $n) (local.get $field)))
          (local.set $acc (i64.const 0))
          (local.set $n (i32.const 0))
          (local.set $field (i32.const 0))
          (if (i32.eq (local.get $b) (i32.const 10))
            (then
              (call $endRow (local.get $h) (local.get $i))
              (local.set $h (i64.const 0x243f6a8885a308d3))))
          (br $next))
        ;; A byte of the field's value.
        (if (i32.and (local.get $field) (i32.const 4)) (then (global.set $inconclusive (i32.const 1))))
        (local.set $field (i32.or (local.get $field) (i32.const 1)))
        (local.set $acc (i64.or (local.get $acc) (i64.shl (i64.extend_i32_u (local.get $b)) (i64.extend_i32_u (i32.shl (local.get $n) (i32.const 3))))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $next (i32.ne (local.get $n) (i32.const 8)))
        (local.set $h (call $mix (local.get $h) (local.get $acc)))
        (local.set $acc (i64.const 0))
        (local.set $n (i32.const 0))
        (br $next)))
    (global.set $streamBytes (i64.add (global.get $streamBytes) (i64.extend_i32_u (local.get $len))))
    (global.set $h (local.get $h))
    (global.set $acc (local.get $acc))
    (global.set $accBytes (local.get $n))
    (global.set $field (local.get $field))
    (global.set $escaped (local.get $escaped)))
)
