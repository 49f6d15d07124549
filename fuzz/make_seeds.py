#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/) in the wire formats of
mp::reduction (little-endian, u64 lengths, no type tag: the targets prepend it) and lib/support/auth.cpp.
Re-run after a format change: python3 fuzz/make_seeds.py"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack('<B', v)
def i32(v): return struct.pack('<i', v)
def u32(v): return struct.pack('<I', v)
def i64(v): return struct.pack('<q', v)
def u64(v): return struct.pack('<Q', v)
def f64(v): return struct.pack('<d', v)
def string(s): b = s.encode() if isinstance(s, str) else s; return u64(len(b)) + b
def string_u32(s): b = s.encode(); return u32(len(b)) + b
def seq(items): return u64(len(items)) + b''.join(items)


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


# fuzz_reduction: first byte = type selector (see fuzz_reduction.cpp), then the payload.
red = {
    'int': (0, i32(-7)),
    'double': (1, f64(2.5)),
    'bool': (2, u8(1)),
    'string': (3, string('hello')),
    'vector_int': (4, seq([i32(1), i32(2), i32(3)])),
    'vector_string': (5, seq([string('a'), string('bc')])),
    'map': (6, seq([string('a') + i32(1), string('b') + i32(2)])),
    'unordered_map': (7, seq([i32(1) + seq([u8(65)])])),
    'set': (8, seq([string('x'), string('y')])),
    'tuple': (9, i32(4) + string('x') + u8(0) + f64(1.5)),  # optional: a 'nullopt' bool first
    'variant': (10, i32(1) + string('v')),  # int32 index
    'nested': (11, seq([seq([string('a')]), seq([])])),
    'user': (12, string('c') + seq([f64(9)]) + u8(0) + seq([i32(1) + string('one')])),
    'raw': (13, bytes(24)),
    'pair': (14, u8(1) + u8(0) + string('s')),
    'shared_block': (15, u64(3) + u64(4096)),
    'huge_length': (4, u64(1 << 62)),
}
for name, (sel, payload) in red.items():
    write('reduction', name, u8(sel) + payload)


# fuzz_spawn_data: byte 0 even = payload behind the right tag.
def code_ref(module, build_id, offset): return string(module) + string(build_id) + u64(offset)


prep = (u32(1) + string('Process-1') + seq([i32(1)]) + u8(0) + string(b'\x01' * 32) + i32(1234) +
        string('spawn') + u8(1) + code_ref('', 'ab' * 20, 0x1234) + code_ref('', 'ab' * 20, 0x5678) +
        string(i32(42)) + seq([i64(5), i64(6)]))
write('spawn_data', 'target', u8(0) + prep)
write('spawn_data', 'no_target', u8(0) + u32(1) + string('Process-2:1') + seq([i32(2), i32(1)]) + u8(1) +
      string('k') + i32(1) + string('fork') + u8(0) + code_ref('', '', 0) * 2 + string('') + seq([]))
write('spawn_data', 'bad_tag', u8(1) + u64(0) + prep)

# fuzz_auth: byte 0 = side (0 answer, 1 deliver, 2 server, 3 client), then the peer's frames.
def frame(b): return u32(len(b)) + b


challenge = frame(b'#CHALLENGE#' + bytes(range(32)))
welcome = frame(b'#WELCOME#')
write('auth', 'answer', u8(0) + challenge + welcome)
write('auth', 'answer_failure', u8(0) + challenge + frame(b'#FAILURE#'))
write('auth', 'deliver_wrong_digest', u8(1) + frame(bytes(32)))
write('auth', 'server', u8(2) + frame(bytes(32)) + challenge + welcome)
write('auth', 'client', u8(3) + challenge + welcome + frame(bytes(32)))
write('auth', 'oversized', u8(0) + u32(0xFFFFFFF0))

# fuzz_connection: byte 0 = reader (see fuzz_connection.cpp), then what the peer wrote:
# messages framed [u32 size] (or [0xffffffff][u64 size]) then the bytes; recv<T> payloads start
# with the u64 type tag of T (a fixed hash; the fuzzer finds it from the seeds' bytes too).
def msg(b): return u32(len(b)) + b


write('connection', 'bytes', u8(0) + msg(b'hello') + msg(b'') + msg(b'world'))
write('connection', 'maxlength', u8(1) + msg(b'x' * 10) + msg(b'y' * 2000))
write('connection', 'string_untagged', u8(2) + msg(u64(0) + string('s')))
write('connection', 'vector_untagged', u8(3) + msg(u64(0) + seq([i32(1), i32(2)])))
write('connection', 'into', u8(4) + msg(b'z' * 100) + msg(b'w' * 300))
write('connection', 'long_header', u8(0) + u32(0xFFFFFFFF) + u64(5) + b'abcde')
write('connection', 'huge_length', u8(0) + u32(0xFFFFFFFF) + u64(1 << 40) + b'abc')
write('connection', 'truncated', u8(0) + u32(100) + b'short')
write('connection', 'over_cap', u8(5) + msg(b'q' * 5000))
# A Pipe's ring (byte 0 / 6 % 2 == 1): frames [u32 kind (1 whole)][u32 size] payload, 8-aligned;
# byte 0 / 12 % 2 == 1 also puts the first 40 bytes into the copy beside the ring's tail.
def frame(payload): return u32(1) + u32(len(payload)) + payload + b'\0' * (-len(payload) % 8)


write('connection', 'ring_frames', u8(6) + frame(b'hello') + frame(b'') + frame(b'w' * 300))
write('connection', 'ring_copy', u8(12 + 6) + frame(b'small') + frame(b'x' * 20))


# fuzz_managers: byte 0 even = server (a sequence of request frames), odd = client (a response).
# request = u8 op (1 call, 2 create, 3 incref, 4 decref, 5 shutdown, 6 number_of_objects, 7 ping),
# u64 object id, u32 name length, name, arguments (reduction, no tag); response = u8 0 + result |
# u8 1 + u32 type length + type + message. Ids are given by the server from 1.
def req(op, oid, name, args=b''): n = name.encode(); return msg(u8(op) + u64(oid) + u32(len(n)) + n + args)


write('managers', 'server_lock', u8(0) + req(2, 0, 'Lock') + req(1, 1, 'locked') + req(1, 1, 'release') +
      req(3, 1, '') + req(4, 1, '') + req(4, 1, '') + req(6, 0, ''))
write('managers', 'server_semaphore', u8(0) + req(2, 0, 'Semaphore', i32(2)) + req(1, 1, 'release', i32(1)) +
      req(1, 1, 'get_value'))
write('managers', 'server_barrier', u8(0) + req(2, 0, 'Barrier', i32(3)) + req(1, 1, 'parties') +
      req(1, 1, 'n_waiting') + req(1, 1, 'abort') + req(1, 1, 'broken') + req(1, 1, 'reset'))
write('managers', 'server_namespace', u8(0) + req(2, 0, 'Namespace') + req(1, 1, 'setattr', string('a') + string('1')) +
      req(1, 1, 'getattr', string('a')) + req(1, 1, 'hasattr', string('b')) + req(1, 1, 'names') +
      req(1, 1, 'delattr', string('a')))
write('managers', 'server_event', u8(0) + req(2, 0, 'Event') + req(1, 1, 'set') + req(1, 1, 'is_set') +
      req(1, 1, 'clear') + req(7, 0, '') + req(5, 0, ''))
write('managers', 'server_condition', u8(0) + req(2, 0, 'Condition') + req(1, 1, 'notify', i32(1)) +
      req(1, 1, 'notify_all'))
write('managers', 'server_bad', u8(0) + req(9, 0, '') + req(1, 42, 'x') + req(2, 0, 'NoSuchType') +
      req(2, 0, 'Barrier', i32(-1)) + u32(0xFFFFFFFF))
write('managers', 'server_truncated', u8(0) + u32(50) + b'\x02')
write('managers', 'client_ok', u8(1) + u8(0) + u64(7))
write('managers', 'client_remote', u8(1) + u8(1) + string_u32('std::runtime_error') + b'boom')
write('managers', 'client_key_error', u8(1) + u8(1) + string_u32('mp::KeyError') + b'key not in dict')
write('managers', 'client_empty', u8(1) + u8(1) + string_u32('mp::Empty'))
write('managers', 'client_barrier', u8(1) + u8(1) + string_u32('mp::BrokenBarrierError') + b'broken')
write('managers', 'client_bad_status', u8(1) + u8(7))

# fuzz_shareable_list: byte 0 = item to write back (0: none), then a segment in CPython's
# ShareableList layout (lib/shareable_list_layout.hpp; native = little-endian here).
def shareable_list(items):
    fmts, codes, slots = [], [], []
    for v in items:
        if isinstance(v, (str, bytes)):
            b = v.encode() if isinstance(v, str) else v
            n = 8 * (len(b) // 8 + 1)
            fmts.append(b'%ds' % n); codes.append(1 if isinstance(v, str) else 2); slots.append(b.ljust(n, b'\0'))
        elif v is None:
            fmts.append(b'xxxxxx?x'); codes.append(3); slots.append(bytes(8))
        elif isinstance(v, bool):
            fmts.append(b'xxxxxxx?'); codes.append(0); slots.append(bytes(7) + u8(v))
        elif isinstance(v, int):
            fmts.append(b'q'); codes.append(0); slots.append(i64(v))
        else:
            fmts.append(b'd'); codes.append(0); slots.append(f64(v))
    offsets = [0]
    for s in slots:
        offsets.append(offsets[-1] + len(s))
    return (i64(len(items)) + b''.join(i64(o) for o in offsets) + b''.join(slots) +
            b''.join(f.ljust(8, b'\0') for f in fmts) + bytes(c & 0xff for c in codes))


write('shareable_list', 'all_types', u8(0) + shareable_list([1, 2.5, True, 'text', None, b'by\0']))
write('shareable_list', 'write_back', u8(7) + shareable_list([-1, 'a' * 20, b'', None]))
write('shareable_list', 'empty', u8(0) + shareable_list([]))
write('shareable_list', 'mp_exact_length', u8(0) + shareable_list(['ab'])[:-9] + b'2s \0\0\0\0\0' + u8(1))
write('shareable_list', 'huge_length', u8(0) + i64(1 << 60) + bytes(16))
write('shareable_list', 'bad_offsets', u8(3) + i64(2) + i64(0) + i64(1 << 40) + i64(8) + bytes(40))

# fuzz_pool_items: byte 0 = decoder (see fuzz_pool_items.cpp), bytes 1-2 = results expected (u16),
# then a chunk: [u32 count] then the items (raw values as their bytes, others as reduction writes
# them, without type tags).
def chunk(sel, expected, items):
    return u8(sel) + struct.pack('<H', expected) + u32(len(items)) + b''.join(items)


write('pool_items', 'longs', chunk(0, 3, [i64(1), i64(-4), i64(9)]))
write('pool_items', 'pairs', chunk(1, 2, [i32(1) + bytes(4) + f64(0.5), i32(2) + bytes(4) + f64(-1)]))
write('pool_items', 'strings', chunk(2, 2, [string('ab'), string('')]))
write('pool_items', 'vectors', chunk(3, 2, [seq([i32(1), i32(2)]), seq([])]))
write('pool_items', 'tuples', chunk(4, 1, [string('x') + i64(7)]))
write('pool_items', 'optionals', chunk(5, 2, [u8(1) + string('y'), u8(0)]))
write('pool_items', 'void', chunk(6, 4, []) [:3] + u32(4))
write('pool_items', 'worker_longs', chunk(7, 0, [i64(3), i64(-3)]))
write('pool_items', 'worker_strings', chunk(8, 0, [string('abc')]))
write('pool_items', 'worker_vectors', chunk(9, 0, [seq([i32(5)]) + i32(2), seq([]) + i32(0)]))
write('pool_items', 'wrong_count', chunk(0, 5, [i64(1)]))
write('pool_items', 'huge_count', u8(2) + struct.pack('<H', 1) + u32(0xFFFFFFFF) + string('z'))
write('pool_items', 'huge_length', chunk(3, 1, [u64(1 << 62)]))
