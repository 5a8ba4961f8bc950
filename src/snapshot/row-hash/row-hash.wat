;; Row hash: the content hash of a stream of PostgreSQL COPY rows, computed as the bytes pass.
;;
;; Capture hashes the CSV that PostgreSQL's COPY ... TO STDOUT (FORMAT csv) produces; restore
;; hashes the text-format lines it feeds to COPY ... FROM STDIN. Both are decoded to the same
;; thing, a row of fields, each either NULL or a string of bytes, so a row hashes the same in
;; either format (and however a CSV writer chose to quote it):
;;
;;   field  → its bytes as big-endian 64-bit words (a last partial word zero-padded on the left),
;;            then one tag word 0xFF00_0000_0000_0000 | null << 8 | (bytes in the partial word);
;;            0xFF never occurs in UTF-8, so a tag can never be mistaken for data;
;;   word   → h = (h xor word) * 0x9E3779B97F4A7C15; h = h xor (h >> 32)   (h starts at 0x243F6A8885A308D3)
;;   row    → MurmurHash3's fmix64 of h, added to a 128-bit sum (order-independent).
;;
;; The caller copies each chunk of the stream to offset 0 of memory and calls update(length);
;; all state lives in globals, so records may span chunks. reset(format) starts a new stream.
;;
;; Anything the decoder does not fully understand (an escape PostgreSQL's text parser would read
;; differently, a carriage return outside quotes) sets `inconclusive`: such a stream's hash is
;; never trusted, so a decoding gap can only cause a slower check, never a false match.
(module
  (memory (export "memory") 1)

  ;; 0 = CSV (quote ", escape ", NULL = empty unquoted field), 1 = COPY text format.
  (global $format (mut i32) (i32.const 0))
  (global $h (mut i64) (i64.const 0x243f6a8885a308d3))
  (global $acc (mut i64) (i64.const 0))
  (global $accBytes (mut i32) (i32.const 0))
  ;; bit 0: the field has bytes; bit 1: the field is not NULL (CSV: quoted); bit 2: the field is NULL (text: \N).
  (global $field (mut i32) (i32.const 0))
  ;; CSV: 0 outside quotes, 1 inside, 2 inside right after a quote. Text: 0 normal, 1 after a backslash.
  (global $state (mut i32) (i32.const 0))
  (global $streamBytes (mut i64) (i64.const 0))
  (global $rowStart (mut i64) (i64.const 0))
  (global $maxRowBytes (export "maxRowBytes") (mut i64) (i64.const 0))
  (global $rows (export "rows") (mut i64) (i64.const 0))
  (global $sumLo (export "sumLo") (mut i64) (i64.const 0))
  (global $sumHi (export "sumHi") (mut i64) (i64.const 0))
  (global $inconclusive (export "inconclusive") (mut i32) (i32.const 0))

  (func (export "reset") (param $format i32)
    (global.set $format (local.get $format))
    (global.set $h (i64.const 0x243f6a8885a308d3))
    (global.set $acc (i64.const 0))
    (global.set $accBytes (i32.const 0))
    (global.set $field (i32.const 0))
    (global.set $state (i32.const 0))
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
      (i32.eqz (global.get $state))))

  (func $mix (param $h i64) (param $word i64) (result i64)
    (local $x i64)
    (local.set $x (i64.mul (i64.xor (local.get $h) (local.get $word)) (i64.const 0x9e3779b97f4a7c15)))
    (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 32))))

  ;; Mix in what is left of the field and its tag. NULL: CSV — no bytes and not quoted; text — \N.
  (func $endField (param $h i64) (param $acc i64) (param $n i32) (param $field i32) (result i64)
    (local $null i32)
    (if (local.get $n) (then (local.set $h (call $mix (local.get $h) (local.get $acc)))))
    (local.set $null
      (if (result i32) (global.get $format)
        (then (i32.ne (i32.and (local.get $field) (i32.const 4)) (i32.const 0)))
        (else (i32.eqz (i32.and (local.get $field) (i32.const 3))))))
    (call $mix (local.get $h)
      (i64.or (i64.const 0xff00000000000000)
        (i64.extend_i32_u (i32.or (local.get $n) (i32.shl (local.get $null) (i32.const 8)))))))

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
    (local $i i32) (local $b i32) (local $h i64) (local $acc i64) (local $n i32) (local $field i32) (local $state i32)
    (local.set $h (global.get $h))
    (local.set $acc (global.get $acc))
    (local.set $n (global.get $accBytes))
    (local.set $field (global.get $field))
    (local.set $state (global.get $state))
    (if (global.get $format)
      (then
        ;; COPY text format: fields end at tab, rows at newline; backslash escapes.
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
            (local.set $b (i32.load8_u (local.get $i)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (block $emit
              (if (local.get $state)
                (then
                  (local.set $state (i32.const 0))
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
              (if (i32.eq (local.get $b) (i32.const 92)) (then (local.set $state (i32.const 1)) (br $next)))
              (if (i32.eq (local.get $b) (i32.const 13)) (then (global.set $inconclusive (i32.const 1))))
              (if (i32.or (i32.eq (local.get $b) (i32.const 9)) (i32.eq (local.get $b) (i32.const 10)))
                (then
                  (local.set $h (call $endField (local.get $h) (local.get $acc) (local.get $n) (local.get $field)))
                  (local.set $acc (i64.const 0))
                  (local.set $n (i32.const 0))
                  (local.set $field (i32.const 0))
                  (if (i32.eq (local.get $b) (i32.const 10))
                    (then
                      (call $endRow (local.get $h) (local.get $i))
                      (local.set $h (i64.const 0x243f6a8885a308d3))))
                  (br $next))))
            ;; A byte of the field's value.
            (if (i32.and (local.get $field) (i32.const 4)) (then (global.set $inconclusive (i32.const 1))))
            (local.set $field (i32.or (local.get $field) (i32.const 1)))
            (local.set $acc (i64.or (i64.shl (local.get $acc) (i64.const 8)) (i64.extend_i32_u (local.get $b))))
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (br_if $next (i32.ne (local.get $n) (i32.const 8)))
            (local.set $h (call $mix (local.get $h) (local.get $acc)))
            (local.set $acc (i64.const 0))
            (local.set $n (i32.const 0))
            (br $next))))
      (else
        ;; CSV: fields end at comma, rows at newline, both only outside quotes; "" inside quotes is a quote.
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
            (local.set $b (i32.load8_u (local.get $i)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (block $emit
              (if (i32.eq (local.get $state) (i32.const 1))
                (then
                  (br_if $emit (i32.ne (local.get $b) (i32.const 34)))
                  (local.set $state (i32.const 2))
                  (br $next)))
              (if (i32.eq (local.get $state) (i32.const 2))
                (then
                  (if (i32.eq (local.get $b) (i32.const 34))
                    (then (local.set $state (i32.const 1)) (br $emit)))
                  (local.set $state (i32.const 0))))
              ;; Outside quotes.
              (if (i32.eq (local.get $b) (i32.const 34))
                (then
                  (local.set $state (i32.const 1))
                  (local.set $field (i32.or (local.get $field) (i32.const 2)))
                  (br $next)))
              (if (i32.eq (local.get $b) (i32.const 13)) (then (global.set $inconclusive (i32.const 1))))
              (if (i32.or (i32.eq (local.get $b) (i32.const 44)) (i32.eq (local.get $b) (i32.const 10)))
                (then
                  (local.set $h (call $endField (local.get $h) (local.get $acc) (local.get $n) (local.get $field)))
                  (local.set $acc (i64.const 0))
                  (local.set $n (i32.const 0))
                  (local.set $field (i32.const 0))
                  (if (i32.eq (local.get $b) (i32.const 10))
                    (then
                      (call $endRow (local.get $h) (local.get $i))
                      (local.set $h (i64.const 0x243f6a8885a308d3))))
                  (br $next))))
            ;; A byte of the field's value.
            (local.set $field (i32.or (local.get $field) (i32.const 1)))
            (local.set $acc (i64.or (i64.shl (local.get $acc) (i64.const 8)) (i64.extend_i32_u (local.get $b))))
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (br_if $next (i32.ne (local.get $n) (i32.const 8)))
            (local.set $h (call $mix (local.get $h) (local.get $acc)))
            (local.set $acc (i64.const 0))
            (local.set $n (i32.const 0))
            (br $next)))))
    (global.set $streamBytes (i64.add (global.get $streamBytes) (i64.extend_i32_u (local.get $len))))
    (global.set $h (local.get $h))
    (global.set $acc (local.get $acc))
    (global.set $accBytes (local.get $n))
    (global.set $field (local.get $field))
    (global.set $state (local.get $state)))
)
