"""The counting harness shared by every fault case.

A case sends tasks through a Ledger, breaks something, lets the system recover, then tallies:

  sent        task ids the case published
  completed   ids whose stored result reached the final state the case expects
  executions  per id, how many times a worker finished running it ("succeeded in" / "raised"
              lines in the workers' logs, Celery's own log format); a run cut short by kill -9
              finishes nothing and is not counted
  duplicated  sum over ids of (executions - 1) where more than one run finished
  lost        sent ids that never completed

and writes one JSON line per case (write_record) into RESULTS; report.py renders those lines as
docs/reliability.md. A case not written yet is listed in PENDING instead.
"""
import collections
import json
import os
import re
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.environ.get('CVTASKS_FAULTS_RESULTS',
                         os.path.join(ROOT, 'build', 'faults', 'results.jsonl'))

# A run that finished: "Task <name>[<id>] succeeded in ..." or "... raised ...". A retry
# ("... retry: Retry in ...") is not a finish: the retried message finishes later.
FINISHED_RE = re.compile(r'\[([0-9a-fA-F-]{36})\] (?:succeeded in|raised)')

# Cases of issue 8 that need the domain tasks (database, SMTP, wkhtmltopdf, MEDIA_ROOT) or beat.
# Each becomes one function in test_*.py, using Ledger and write_record, when its feature lands.
# Fault cases not written yet, with what already covers part of them elsewhere.
PENDING = [
    ('database locked', 'SQLite database held under an exclusive lock while DB tasks run',
     'unit test SqliteDatabase (locked = transient, retried)'),
    ('database down', 'PostgreSQL stopped mid-stream, then started again',
     'test_pdf_email.py: an unreachable PostgreSQL is retried, then fails; the worker lives on'),
    ('wkhtmltopdf hanging', 'wkhtmltopdf stalls past task_time_limit',
     'test_mail_paths.py: a render past the hard/soft limit is killed, the pool recovers'),
    ('disk full on MEDIA_ROOT', 'MEDIA_ROOT on a tiny tmpfs that fills up mid-stream',
     'nothing yet'),
    ('beat killed across a scheduled time', 'kill -9 of run_celery_beat just before a due entry, '
     'restart after it', 'test_beat.py: the standby takes over after kill -9 of the leader'),
]


class Ledger:
    """The task ids a case sent, and the final state each must reach."""

    def __init__(self):
        self.expected = {}  # id -> final state

    def add(self, task_id, final_state='SUCCESS'):
        self.expected[task_id] = final_state
        return task_id

    def send(self, signature_call, final_state='SUCCESS'):
        """ledger.send(app.diag.add.delay(1, 2)): returns the AsyncResult."""
        self.add(signature_call.id, final_state)
        return signature_call

    @property
    def ids(self):
        return list(self.expected)

    def states(self, rc1):
        ids, out = self.ids, {}
        for at in range(0, len(ids), 500):
            chunk = ids[at:at + 500]
            for task_id, raw in zip(chunk, rc1.mget(['celery-task-meta-' + i for i in chunk])):
                out[task_id] = json.loads(raw)['status'] if raw is not None else 'PENDING'
        return out

    def done(self, rc1):
        return all(s == self.expected[i] for i, s in self.states(rc1).items())

    def wait(self, rc1, timeout):
        """Wait until every id reached its final state or `timeout` passed; True if all did."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.done(rc1):
                return True
            time.sleep(0.2)
        return self.done(rc1)

    def tally(self, rc1, workers):
        finished = collections.Counter()
        for w in workers:
            finished.update(FINISHED_RE.findall(w.log))
        states = self.states(rc1)
        runs = {task_id: finished[task_id] for task_id in self.expected}
        completed = [i for i, s in states.items() if s == self.expected[i]]
        lost = [i for i in self.expected if states[i] != self.expected[i]]
        return {
            'sent': len(self.expected),
            'completed': len(completed),
            'duplicated': sum(n - 1 for n in runs.values() if n > 1),
            'lost': len(lost),
            'lost_ids': lost,
            'duplicated_ids': [i for i, n in runs.items() if n > 1],
            'states': {s: list(states.values()).count(s) for s in set(states.values())},
        }


def write_record(case, action, tally, explanation, allowed_lost=0, allowed_duplicates=0,
                 extra=None):
    """Append the case's result line to RESULTS and return it. `ok` is whether the observation
    is within what the case allows; the test asserts it."""
    rec = {
        'case': case, 'action': action, 'explanation': explanation,
        'sent': tally['sent'], 'completed': tally['completed'],
        'duplicated': tally['duplicated'], 'lost': tally['lost'],
        'allowed_lost': allowed_lost, 'allowed_duplicates': allowed_duplicates,
        'ok': tally['lost'] <= allowed_lost and tally['duplicated'] <= allowed_duplicates,
        'when': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
    }
    rec.update(extra or {})
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, 'a') as f:
        f.write(json.dumps(rec) + '\n')
    return rec


def assert_ok(rec, tally):
    assert rec['ok'], ('%s: lost %d (allowed %d) %s, duplicated %d (allowed %d) %s, states %s'
                       % (rec['case'], rec['lost'], rec['allowed_lost'], tally['lost_ids'],
                          rec['duplicated'], rec['allowed_duplicates'],
                          tally['duplicated_ids'], tally['states']))
