"""The hostile-input corpus: malformed envelopes and bodies a stranger could push to a queue,
each with what the worker must do with it, plus well-formed messages to push beside them.

  /usr/bin/python3 tests/faults/hostile.py --write DIR   writes every case as a file in DIR
                                                          (the fuzzer's seed corpus)

Expectations:
  DEAD            moved to `cvtasks.dead_letter`, no result stored (no readable task id)
  DEAD_FAILURE    moved to `cvtasks.dead_letter` and FAILURE ContentDisallowed stored for its id
  ('FAILURE', T)  acked and FAILURE with exc_type T stored (a clear error for the client)
  'SUCCESS'       a legitimate, if unusual, message: it runs
"""
import base64
import json
import os
import sys
import uuid
import zlib

DIAG = 'cvtasks.diagnostics.'
DEAD, DEAD_FAILURE = 'DEAD', 'DEAD_FAILURE'
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the worker's default max_message_bytes


def envelope(task, args=(), kwargs=None, task_id=None, body=None, queue='celery'):
    """A protocol-v2 task message as Celery 5.2 pushes it (docs/protocol.md §1.1). `body`
    replaces the encoded [args, kwargs, embed] when given (bytes, base64-encoded here)."""
    task_id = task_id or str(uuid.uuid4())
    if body is None:
        body = json.dumps([list(args), kwargs or {}, {'callbacks': None, 'errbacks': None,
                                                      'chain': None, 'chord': None}]).encode()
    headers = {'lang': 'py', 'task': task, 'id': task_id, 'shadow': None, 'eta': None,
               'expires': None, 'group': None, 'group_index': None, 'retries': 0,
               'timelimit': [None, None], 'root_id': task_id, 'parent_id': None,
               'argsrepr': repr(tuple(args)), 'kwargsrepr': repr(kwargs or {}),
               'origin': 'gen0@faults', 'ignore_result': False}
    return {
        'body': base64.b64encode(body).decode(),
        'content-encoding': 'utf-8', 'content-type': 'application/json',
        'headers': headers,
        'properties': {'correlation_id': task_id, 'reply_to': '', 'delivery_mode': 2,
                       'delivery_info': {'exchange': '', 'routing_key': queue},
                       'priority': 0, 'body_encoding': 'base64',
                       'delivery_tag': str(uuid.uuid4())},
    }


def good(i):
    """A well-formed add(i, 100): (id, raw bytes)."""
    e = envelope(DIAG + 'add', (i, 100))
    return e['headers']['id'], json.dumps(e).encode()


def _dump(e):
    return json.dumps(e).encode()


def _with(change, task=DIAG + 'add', args=(1, 2)):
    e = envelope(task, args)
    tid = e['headers']['id']
    change(e)
    return tid, _dump(e)


def _body(raw_body, task=DIAG + 'add'):
    e = envelope(task, body=raw_body)
    return e['headers']['id'], _dump(e)


def _raw_header(raw_value):
    """An add(1, 2) with header x-raw set to `raw_value` verbatim (json.dumps cannot write what
    a hostile producer can, e.g. 100 000 levels of nesting)."""
    e = envelope(DIAG + 'add', (1, 2))
    e['headers']['x-raw'] = 'PLACEHOLDER'
    return e['headers']['id'], _dump(e).replace(b'"PLACEHOLDER"', raw_value.encode())


def _compressed(raw_body, method='application/x-gzip', args=(1, 2)):
    """An add(*args) whose body is `raw_body` (already compressed) under header `compression`."""
    e = envelope(DIAG + 'add', args, body=raw_body)
    e['headers']['compression'] = method
    return e['headers']['id'], _dump(e)


def _protocol1(task=DIAG + 'add', args=(1, 2)):
    """A protocol 1 message as Celery 5.2 with task_protocol=1 pushes it (docs/protocol.md
    §1.6): no task headers, the fields in the body."""
    e = envelope(task, args)
    tid = e['headers']['id']
    e['headers'] = {}
    e['body'] = base64.b64encode(json.dumps({
        'task': task, 'id': tid, 'args': list(args), 'kwargs': {}, 'group': None,
        'group_index': None, 'retries': 0, 'eta': None, 'expires': None, 'utc': True,
        'callbacks': None, 'errbacks': None, 'timelimit': [None, None], 'taskset': None,
        'chord': None}).encode()).decode()
    return tid, _dump(e)


def _nested(depth):
    return '[' * depth + ']' * depth


def cases():
    """[(name, task id or None, raw bytes, expectation)]; every id is fresh per call."""
    out = []

    def add(name, tid_raw, expect):
        tid, raw = tid_raw
        out.append((name, tid, raw, expect))

    whole = good(0)[1]
    add('truncated envelope', (None, whole[:len(whole) // 2]), DEAD)
    add('empty message', (None, b''), DEAD)
    add('not JSON', (None, b'this is not json {'), DEAD)
    add('JSON list, not an object', (None, b'["a", "json", "list"]'), DEAD)
    add('invalid UTF-8 in the envelope', (None, whole.replace(b'gen0', b'\xff\xfe\xc3\x28')), DEAD)
    add('NUL bytes in the envelope', (None, whole.replace(b'gen0', b'\x00\x00')), DEAD)
    add('no delivery tag', _with(lambda e: e['properties'].pop('delivery_tag')), DEAD)
    add('delivery tag not a string', _with(lambda e: e['properties'].update(delivery_tag=7)), DEAD)
    add('no headers (protocol v1)', _with(lambda e: e.pop('headers')), DEAD)
    add('missing task id', _with(lambda e: e['headers'].pop('id')), DEAD)
    add('task id not a string', _with(lambda e: e['headers'].update(id=12345)), DEAD)
    add('missing task name', _with(lambda e: e['headers'].pop('task')), DEAD_FAILURE)
    add('task name not a string', _with(lambda e: e['headers'].update(task=['x'])), DEAD_FAILURE)
    add('eta not a time', _with(lambda e: e['headers'].update(eta='not a date')), DEAD_FAILURE)
    add('eta of the wrong type', _with(lambda e: e['headers'].update(eta={'a': 1})), DEAD_FAILURE)
    add('eta out of range (1e300 s)', _with(lambda e: e['headers'].update(eta=1e300)),
        DEAD_FAILURE)
    add('expires out of range (year 99999)',
        _with(lambda e: e['headers'].update(expires='99999-01-01T00:00:00')), DEAD_FAILURE)
    add('content type pickle', _with(lambda e: e.update({
        'content-type': 'application/x-python-serialize',
        'body': base64.b64encode(b'\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01K\x02\x86'
                                 b'\x94.').decode()})), DEAD_FAILURE)
    add('content type yaml', _with(lambda e: e.update({
        'content-type': 'application/x-yaml',
        'body': base64.b64encode(b'!!python/object/apply:os.system ["true"]').decode()})),
        DEAD_FAILURE)
    add('content type null', _with(lambda e: e.update({'content-type': None})), DEAD_FAILURE)
    add('body missing', _with(lambda e: e.pop('body')), DEAD_FAILURE)
    add('body base64 garbage', _with(lambda e: e.update(body='!!!not base64 at all@@@')),
        DEAD_FAILURE)
    add('body base64 of random bytes', _body(os.urandom(64)), DEAD_FAILURE)
    add('body truncated JSON', _body(b'[[1, 2], {"a": '), DEAD_FAILURE)
    add('body invalid UTF-8', _body(b'[["\xff\xfe"], {}, {}]'), DEAD_FAILURE)
    add('body not a list', _body(b'{"args": [1, 2]}'), DEAD_FAILURE)
    add('body args not a list', _body(b'[1, 2, 3]'), DEAD_FAILURE)
    add('body kwargs not an object', _body(b'[[1, 2], [3], {}]'), DEAD_FAILURE)
    add('body deeply nested (100 000 levels)', _body(
        ('[[%s], {}, {}]' % _nested(100000)).encode(), task=DIAG + 'echo'), DEAD_FAILURE)
    add('header deeply nested (100 000 levels)', _raw_header(_nested(100000)), DEAD_FAILURE)
    add('arguments of the wrong type', (lambda e: (e['headers']['id'], _dump(e)))(
        envelope(DIAG + 'add', (1, 'x'))), ('FAILURE', 'TypeError'))
    add('unknown task', (lambda e: (e['headers']['id'], _dump(e)))(
        envelope('no.such.task\x00evil', (1,))), ('FAILURE', 'NotRegistered'))
    add('huge header (2 MB value)',
        _with(lambda e: e['headers'].update({'x-junk': 'A' * (2 << 20)})), 'SUCCESS')
    add('many headers (50 000 keys)', _with(
        lambda e: e['headers'].update({'x-%d' % i: i for i in range(50000)})), 'SUCCESS')
    plain = json.dumps([[1, 2], {}, {}]).encode()
    add('compressed body (zlib), a legitimate message', _compressed(zlib.compress(plain)),
        'SUCCESS')
    add('protocol 1 message, a legitimate one', _protocol1(), 'SUCCESS')
    add('compression bomb: 20 MB of spaces zlib-compressed, over max_message_bytes',
        _compressed(zlib.compress(b'[[1, 2], {}, {}]' + b' ' * (20 << 20), 9)), DEAD_FAILURE)
    add('compression unknown (snappy)', _compressed(plain, 'application/x-snappy'),
        DEAD_FAILURE)
    add('compressed body truncated', _compressed(zlib.compress(plain)[:-4]), DEAD_FAILURE)
    add('compressed body is not compressed', _compressed(plain, 'application/x-bz2'),
        DEAD_FAILURE)
    add('protocol 1 body without a task', _with(lambda e: e.update(headers={})), DEAD)
    add('20 MB body, over max_message_bytes',
        _with(lambda e: e.update(body='A' * (20 << 20))), DEAD_FAILURE)
    return out


def write_seeds(directory, max_bytes=1 << 20):
    """Every case (and a good message) as one file, for the fuzzer; big ones left out."""
    os.makedirs(directory, exist_ok=True)
    items = [('good', good(0)[1])] + [(name, raw) for name, _, raw, _ in cases()]
    written = 0
    for name, raw in items:
        if len(raw) > max_bytes:
            continue
        slug = ''.join(c if c.isalnum() else '_' for c in name.lower())
        with open(os.path.join(directory, slug), 'wb') as f:
            f.write(raw)
        written += 1
    return written


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] != '--write':
        sys.exit('usage: hostile.py --write DIR')
    print('%d seeds written to %s' % (write_seeds(sys.argv[2]), sys.argv[2]))
