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

# Fault cases not written yet, as (case, action, what covers part of it so far): report.py lists
# them as such. Every case issue 8 names is written now.
PENDING = []


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


# ---------------------------------------------------------------- periodic tasks (beat)

# "[2026-11-30 00:00:00,002: INFO/MainProcess] Task <name>[<id>] received": Celery's log format,
# local time to the millisecond.
RECEIVED_RE = re.compile(r'^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): [^\]]*\] '
                         r'Task ([\w.]+)\[([0-9a-fA-F-]{36})\] received', re.M)


def every(seconds):
    """next_due of an interval entry: Celery counts it from the actual send time."""
    return lambda t: t + seconds


def daily_at(instant):
    """next_due of crontab(minute=M, hour=H) whose next occurrence is `instant` (an epoch time)."""
    return lambda t: instant + 86400.0 * max(0, int((t - instant) // 86400) + 1)


class TickLedger:
    """What beat owed in a window and what it sent, per entry: the ticks that fell due, each of
    which must be sent exactly once and complete.

    Celery's beat semantics define the ticks: after a run at s an entry is next due at
    next_due(s) (s + the interval, or the crontab's next occurrence after s), and every tick
    missed while no beat could send collapses into one run, sent when a beat is back. So:

      tick        one due instant (a collapsed run counts as one); the first due is
                  next_due(start), start being when beat first saw the entry
      served      by the first message received in [due - early, deadline], where deadline is
                  due + late, or back + late when the tick fell due while no beat could send
                  (down(since, back)); the next tick is then next_due(that message's time)
      duplicated  a message received before its tick fell due re-serves the previous tick (a
                  tick sent twice), plus any run of one message that finished more than once
      lost        a tick whose deadline passed with no message, or whose messages never
                  reached SUCCESS

    Messages are read from the workers' "Task <name>[<id>] received" lines (one task name per
    entry); `early` absorbs how late the worker may log a message it received."""

    def __init__(self, late=2.5, early=1.0):
        self.late, self.early = late, early
        self.entries = {}  # name -> (task name, next_due, start)
        self.downtimes = []

    def entry(self, name, task, next_due, start):
        self.entries[name] = (task, next_due, start)

    def down(self, since, back):
        """No beat could send from `since` until `back` (killed, restarting, waiting for the
        dead beat's lock to expire)."""
        self.downtimes.append((since, back))

    @staticmethod
    def received(workers):
        """[(task name, id, local receive time)] from the workers' logs, oldest first."""
        out = []
        for w in workers:
            for stamp, ms, task, task_id in RECEIVED_RE.findall(w.log):
                at = time.mktime(time.strptime(stamp, '%Y-%m-%d %H:%M:%S')) + int(ms) / 1000.0
                out.append((task, task_id, at))
        return sorted(out, key=lambda m: m[2])

    def _deadline(self, due):
        for since, back in self.downtimes:
            if since - self.late <= due < back:
                return back + self.late
        return due + self.late

    def ticks(self, name, messages, end):
        """[{'due', 'ids'}] of entry `name` over messages [(id, time)] up to `end`, plus the ids
        received before any tick fell due."""
        _, next_due, start = self.entries[name]
        due, ticks, stray, i = next_due(start), [], [], 0
        while True:
            while i < len(messages) and messages[i][1] < due - self.early:
                (ticks[-1]['ids'] if ticks else stray).append(messages[i][0])
                i += 1
            deadline = self._deadline(due)
            if i < len(messages) and messages[i][1] <= deadline:
                ticks.append({'due': due, 'ids': [messages[i][0]], 'at': messages[i][1]})
                due = next_due(messages[i][1])
                i += 1
            elif deadline <= end:
                ticks.append({'due': due, 'ids': []})
                due = next_due(due)
            else:
                return ticks, stray + [m[0] for m in messages[i:]]

    def tally(self, rc1, workers, end):
        """Ledger.tally's keys over ticks (sent = ticks due), plus 'messages' and per-entry
        'ticks' (due time, message ids)."""
        received = self.received(workers)
        finished = collections.Counter()
        for w in workers:
            finished.update(FINISHED_RE.findall(w.log))
        per_entry, lost, dups, all_ids = {}, [], [], []
        for name, (task, _, _) in self.entries.items():
            msgs = [(i, at) for t, i, at in received if t == task and at <= end]
            ticks, extra = self.ticks(name, msgs, end)
            per_entry[name] = ticks
            dups += extra
            all_ids += [i for i, _ in msgs]
            for t in ticks:
                dups += t['ids'][1:]
        ledger = Ledger()
        for i in all_ids:
            ledger.add(i)
        states = ledger.states(rc1) if all_ids else {}
        completed = 0
        for name, ticks in per_entry.items():
            for t in ticks:
                if any(states.get(i) == 'SUCCESS' for i in t['ids']):
                    completed += 1
                else:
                    lost.append('%s@%s' % (name, time.strftime('%H:%M:%S',
                                                               time.localtime(t['due']))))
        reruns = [i for i in all_ids if finished[i] > 1]
        return {
            'sent': sum(len(t) for t in per_entry.values()),
            'completed': completed,
            'duplicated': len(dups) + sum(finished[i] - 1 for i in reruns),
            'lost': len(lost),
            'lost_ids': lost,
            'duplicated_ids': dups + reruns,
            'states': {s: list(states.values()).count(s) for s in set(states.values())},
            'messages': len(all_ids),
            'ticks': {name: [(round(t['due'], 3), t['ids']) for t in ticks]
                      for name, ticks in per_entry.items()},
        }
