"""SMTP fault cases and CV content injection (issue 8), against the reference CVProject (SQLite),
a real aiosmtpd and the real worker, wkhtmltopdf and pdftotext.

- SMTP refusing: 4xx to every mail for a while, then accepting; 5xx for some mails between good
  ones.
- SMTP hanging: a server that accepts the connection and says nothing, one paused after the
  client's DATA command (it reads on when it wakes), and one that keeps a mail but answers its
  final dot only after the client gave up. The timeout is the project's Django EMAIL_TIMEOUT.
- CV content injection: CVs and arguments crafted for HTML/script, mail-header and path
  injection, sent through the PDF, email, notification and analysis tasks.

Besides the Ledger's count of task results, each mail case counts at the SMTP server: a mail kept
twice is a duplicate even if its task ran once, and a task that succeeded without its mail
arriving is lost.
"""
import asyncio
import base64
import collections
import email
import email.policy
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

import cvtasks_interop_conftest as interop
import cv_project
from harness import Ledger, assert_ok

# The interop suite's domain-task fixtures: a migrated CVProject (module scope), the Python
# producer with the project's routes.
from cvtasks_interop_conftest import client, projects, sqlite_project  # noqa: E402,F401

QUEUES = ['-Q', 'email_queue,notification_queue,pdf_queue,analysis_queue,celery', '-c', '2']
# Countdowns 0.5, 1, 2, 4, 8, 16 s: a fault may last half a minute before a mail fails for good
# (the project's defaults, 30 s doubled 3 times, ride out three and a half minutes).
EMAIL_RETRY = {'retry_backoff': 0.5, 'max_retries': 6}
EMAIL_TIMEOUT = 2.0  # the hanging cases' Django EMAIL_TIMEOUT
RECOVERY = 60


# ---------------------------------------------------------------- counting

def parsed(envelope):
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)


def retries(worker, task_id):
    """How many times the mail task `task_id` was retried (deliver()'s "; retry N of M" lines)."""
    return len(re.findall(r'\[%s\]: [^\n]*; retry \d+ of \d+ in' % re.escape(task_id), worker.log))


def email_log(project, task_ids):
    """{task id: [(status, error), ...]} of the email_log rows the tasks wrote."""
    log = project['schema']['email_log']
    f = log['fields']
    rows = cv_project.db_query(project, 'SELECT %s, %s, %s FROM %s WHERE %s IN (%s)' % (
        f['task_id']['column'], f['status']['column'], f['error']['column'], log['table'],
        f['task_id']['column'], ', '.join('?' * len(task_ids))), tuple(task_ids))
    out = collections.defaultdict(list)
    for task_id, status, error in rows:
        out[task_id].append((status, error))
    return out


def count_at_server(tally, ledger, recipients, server, mismatches):
    """Adds what the server kept to the Ledger's tally: a SUCCESS task whose mail never arrived
    is lost, each extra copy of a mail is a duplicate; a FAILURE task's mail must not arrive.
    `recipients`: {task id: the one recipient of its mail}. Returns the copies kept, as a
    Counter of recipient lists ("a@x, b@y")."""
    got = collections.Counter(tuple(m.rcpt_tos) for m in server.messages)
    for task_id, to in recipients.items():
        n = got.pop((to,), 0)
        if ledger.expected[task_id] == 'SUCCESS' and n == 0 and task_id not in tally['lost_ids']:
            tally['lost'] += 1  # its result said SUCCESS: it counted as completed
            tally['lost_ids'].append(task_id)
            tally['completed'] -= 1
        if ledger.expected[task_id] != 'SUCCESS' and n:
            mismatches.append('%s: %d mail(s) to %s arrived, the task was to fail'
                              % (task_id, n, to))
        if n > 1:
            tally['duplicated'] += n - 1
            tally['duplicated_ids'].append(task_id)
    for rcpts, n in got.items():
        mismatches.append('%d mail(s) no task sent, to %s' % (n, ', '.join(rcpts)))
    return collections.Counter(', '.join(m.rcpt_tos) for m in server.messages)


def check_email_log(project, ledger, recipients, mismatches, failed_reply=None):
    """One email_log row per mail task: 'sent' for SUCCESS, 'failed' with the server's reply
    (failed_reply(task_id) names it) for FAILURE."""
    rows = email_log(project, list(recipients))
    for task_id in recipients:
        want = 'sent' if ledger.expected[task_id] == 'SUCCESS' else 'failed'
        got = rows.get(task_id, [])
        if [s for s, _ in got] != [want]:
            mismatches.append('%s: email_log %s, expected one %r row' % (task_id, got, want))
        elif want == 'failed' and failed_reply and failed_reply(task_id) not in got[0][1]:
            mismatches.append('%s: email_log error %r lacks %r'
                              % (task_id, got[0][1], failed_reply(task_id)))


def send_mail_tasks(ledger, tag, n, final_state='SUCCESS', pdf=True, cv_notifications=True):
    """n notifications (both modules), an email_cv_pdf_task and two CV notifications, each to its
    own recipient; returns {task id: recipient}."""
    from cvtasks.tasks import email as email_tasks, notification
    out = {}
    for i in range(n):
        module = notification if i % 2 else email_tasks
        to = '%s-%d@example.com' % (tag, i)
        r = ledger.send(module.send_notification_email.delay([to], '%s %d' % (tag, i),
                                                             'message %d' % i), final_state)
        out[r.id] = to
    if pdf:
        to = '%s-pdf@example.com' % tag
        r = ledger.send(email_tasks.email_cv_pdf_task.delay(1, to, '%s pdf' % tag), final_state)
        out[r.id] = to
    if cv_notifications:  # to the owners of CV 1 and CV 3
        out[ledger.send(email_tasks.send_cv_created_notification.delay(1), final_state).id] = \
            'alice@example.com'
        out[ledger.send(notification.send_cv_updated_notification.delay(3), final_state).id] = \
            'layla@example.com'
    return out


def assert_case(rec, tally, worker, mismatches):
    """The worker lived, every check held, and the counts are within what the case allows."""
    assert worker.alive, 'the worker died'
    assert not mismatches, '\n'.join(mismatches)
    assert_ok(rec, tally)


def start_worker(worker_factory, project, smtp, **kwargs):
    return cv_project.start_worker(worker_factory, project, QUEUES, smtp, email=EMAIL_RETRY,
                                   **kwargs)


def start_case(worker_factory, project, server, redis_server, hook, **kwargs):
    """Gives the SMTP server its hook and starts the worker: (worker, results client, Ledger)."""
    server.hook = hook
    return (start_worker(worker_factory, project, server, **kwargs), redis_server.client(1),
            Ledger())


# ---------------------------------------------------------------- SMTP refusing

@pytest.mark.timeout(120)
def test_smtp_refusing_4xx_then_accepting(sqlite_project, worker_factory, client, redis_server,
                                          tmp_path, record):
    """Greylisting: 450 at RCPT TO (recipients "...-r<i>") or 451 after DATA (the others) until
    every task was refused at least once and 3 s passed; then the server accepts."""
    project = sqlite_project
    server = cv_project.SmtpServer(tmp_path)
    refusing = threading.Event()
    refusing.set()
    refusals = collections.Counter()

    def greylist(command, envelope, address):
        if not refusing.is_set():
            return None
        if command == 'RCPT' and '-r' in address:
            refusals['RCPT'] += 1
            return '450 4.2.0 <%s>: Recipient address rejected: Greylisted, try later' % address
        if command == 'DATA':
            refusals['DATA'] += 1
            return '451 4.3.0 Mail server temporarily rejected message'
        return None

    try:
        w, rc1, ledger = start_case(worker_factory, project, server, redis_server, greylist)
        began = time.monotonic()
        recipients = send_mail_tasks(ledger, 'soft-r', 3)
        recipients.update(send_mail_tasks(ledger, 'soft-d', 3, pdf=False, cv_notifications=False))
        interop.wait_for(lambda: time.monotonic() - began >= 3 and
                         all(retries(w, i) for i in recipients), 30,
                         message='every mail task refused once')
        window = time.monotonic() - began
        refusing.clear()
        ledger.wait(rc1, RECOVERY)

        tally = ledger.tally(rc1, [w])
        mismatches = []
        copies = count_at_server(tally, ledger, recipients, server, mismatches)
        check_email_log(project, ledger, recipients, mismatches)
        tries = {i: retries(w, i) for i in recipients}
        rec = record(
            'SMTP refusing: 4xx for a while, then accepting',
            '%d mail tasks (notifications of both modules, email_cv_pdf_task, CV created/updated) '
            'on -c 2; the server greylisted every mail (450 at RCPT TO or 451 after DATA) for '
            '%.1f s, %d refusals, then accepted; retry_backoff 0.5 s doubling, max_retries 6'
            % (len(recipients), window, sum(refusals.values())), tally,
            'Each 4xx is transient: the task retried with a doubling countdown (%d-%d retries '
            'each; no result stored in between) and succeeded once the server accepted. The '
            'server kept each mail exactly once (a refused mail is not kept) and email_log has '
            'one "sent" row per task; no "failed" row, since a retried attempt is not a final '
            'outcome.' % (min(tries.values()), max(tries.values())),
            extra={'mismatches': mismatches, 'refusals': dict(refusals),
                   'mails_received': sum(copies.values())})
        assert refusals['RCPT'] and refusals['DATA'], refusals
        assert_case(rec, tally, w, mismatches)
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_smtp_refusing_5xx_for_some_mails(sqlite_project, worker_factory, client, redis_server,
                                          tmp_path, record):
    """550 at RCPT TO for "bounce..." recipients, 554 after DATA for subjects with "spam",
    between good mails; the refused ones fail at once, the others are delivered."""
    project = sqlite_project
    server = cv_project.SmtpServer(tmp_path)
    attempts = collections.Counter()
    bounce = '550 5.1.1 <%s>: Recipient address rejected: User unknown'
    spam = '554 5.7.1 Message rejected as spam'

    def refuse(command, envelope, address):
        if command == 'RCPT' and address.startswith('bounce'):
            attempts[address] += 1
            return bounce % address
        if command == 'DATA' and 'spam' in str(parsed(envelope)['Subject']):
            attempts[envelope.rcpt_tos[0]] += 1
            return spam
        return None

    try:
        w, rc1, ledger = start_case(worker_factory, project, server, redis_server, refuse)
        recipients = {}
        from cvtasks.tasks import notification
        for i in range(3):  # good, bounced, good, spam, ... interleaved
            recipients.update(send_mail_tasks(ledger, 'good%d' % i, 2, pdf=i == 0,
                                              cv_notifications=i == 1))
            recipients.update(send_mail_tasks(ledger, 'bounce%d' % i, 2, 'FAILURE', pdf=i == 2,
                                              cv_notifications=False))
            for j in range(2):
                to = 'spam%d-%d@example.com' % (i, j)
                r = ledger.send(notification.send_notification_email.delay(
                    [to], 'cheap spam %d' % j, 'buy now'), 'FAILURE')
                recipients[r.id] = to
        ledger.wait(rc1, RECOVERY)

        tally = ledger.tally(rc1, [w])
        mismatches = []
        count_at_server(tally, ledger, recipients, server, mismatches)

        def reply(task_id):
            to = recipients[task_id]
            return (bounce % to) if to.startswith('bounce') else spam

        check_email_log(project, ledger, recipients, mismatches, reply)
        failed = [i for i in recipients if ledger.expected[i] == 'FAILURE']
        for task_id in failed:
            m = interop.meta(rc1, task_id) or {}
            result = m.get('result') or {}
            if result.get('exc_type') != 'EmailDeliveryError' or \
                    reply(task_id) not in ' '.join(map(str, result.get('exc_message') or [])):
                mismatches.append('%s: %s %s, expected EmailDeliveryError with %r'
                                  % (task_id, m.get('status'), result, reply(task_id)))
            if retries(w, task_id):
                mismatches.append('%s: a 5xx was retried' % task_id)
            if attempts[recipients[task_id]] != 1:
                mismatches.append('%s: %d attempts at the server, expected 1'
                                  % (task_id, attempts[recipients[task_id]]))
        rec = record(
            'SMTP refusing: 5xx for some mails',
            '%d mail tasks on -c 2: %d to recipients the server refuses with 550 at RCPT TO or '
            'with 554 after DATA, interleaved with %d good ones'
            % (len(recipients), len(failed), len(recipients) - len(failed)), tally,
            'A 5xx is permanent: each refused task failed at once with EmailDeliveryError '
            'carrying the server\'s reply (one attempt at the server, no retry), and wrote one '
            '"failed" email_log row with that reply; the ledger expects FAILURE for them. The '
            'good mails between them were each delivered once and logged "sent".',
            extra={'mismatches': mismatches})
        assert_case(rec, tally, w, mismatches)
    finally:
        server.stop()


# ---------------------------------------------------------------- SMTP hanging

class Front:
    """A TCP front for an SMTP server on a port of its own, with the mode of the moment a
    connection arrives: 'relay' passes bytes both ways; 'silent' accepts and never says a word
    (what the client sends is read and dropped); 'stall_data' relays until the client's DATA
    command, then stops reading from the client (the server's 354 still reaches it) until the
    front is set back to 'relay', like a mail server paused mid-message. It then passes on what
    the client had sent, as that server would read it on waking.

    sessions: one dict per connection: mode; rcpt (the RCPT TO addresses); complete (a whole
    message, DATA to the final dot, went through to the server); stalled (the DATA stall
    happened); opened/closed (monotonic times, closed when the client hung up)."""

    def __init__(self, target_port, mode='relay'):
        self.target = ('127.0.0.1', target_port)
        self.mode = mode
        self.sessions = []
        self._socks = []
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A small receive window (inherited by accepted sockets): a stalled read blocks the
        # sender once its own send buffer is full, not megabytes later.
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self._lsock.bind(('127.0.0.1', 0))
        self._lsock.listen(64)
        self.port = self._lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._lsock.accept()
            except OSError:
                return
            session = {'mode': self.mode, 'rcpt': [], 'complete': False, 'stalled': False,
                       'opened': time.monotonic(), 'closed': None}
            self.sessions.append(session)
            self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn, session), daemon=True).start()

    def _serve(self, conn, session):
        if session['mode'] == 'silent':
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
        else:
            up = socket.create_connection(self.target)
            self._socks.append(up)
            threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()
            self._pump(conn, up, session)
        session['closed'] = time.monotonic()

    def _pump(self, src, dst, session=None):
        """src -> dst until EOF; from the client (`session` given) with the notes above."""
        head, tail = b'', None  # the commands up to DATA; then the data's last bytes
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if session is None:
                    continue
                if tail is None:
                    head += data
                    if (b'\n' + head).endswith(b'\nDATA\r\n'):
                        session['rcpt'] = [a.decode() for a in re.findall(
                            rb'RCPT TO: ?<([^>]*)>', head, re.I)]
                        tail = b'\r\n'
                        if session['mode'] == 'stall_data':
                            session['stalled'] = True
                            while self.mode == 'stall_data':
                                time.sleep(0.05)
                else:
                    session['complete'] |= b'\r\n.\r\n' in tail + data
                    tail = (tail + data)[-4:]
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def complete(self, to, stalled=None):
        """How many sessions carried a whole message to `to` through (stalled or not)."""
        return sum(1 for s in self.sessions if s['complete'] and to in s['rcpt']
                   and stalled in (None, s['stalled']))

    def stop(self):
        self._lsock.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture(scope='module')
def short_timeout_project(projects, tmp_path_factory):
    """The sqlite project's settings document built by Django from settings that import the
    project's and set EMAIL_TIMEOUT = 2 (the shipped example says 10, Django's default is None)."""
    project = projects('sqlite')
    folder = tmp_path_factory.mktemp('django-settings')
    (folder / 'faults_smtp_settings.py').write_text(
        'from CVProject.settings import *  # noqa\nEMAIL_TIMEOUT = %r\n' % EMAIL_TIMEOUT)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE='faults_smtp_settings', PYTHONPATH=str(folder),
               CVPROJECT_DATA_DIR=os.path.dirname(project['databases']['default']['NAME']))
    out = subprocess.run([cv_project.PYTHON, '-c', cv_project.DOCUMENT], cwd=cv_project.EXAMPLE,
                         env=env, check=True, capture_output=True, text=True, timeout=60).stdout
    document = json.loads(out)
    assert project['email']['timeout'] == 10  # the example project's EMAIL_TIMEOUT
    assert document['email']['timeout'] == EMAIL_TIMEOUT
    assert document['databases'] == project['databases']
    return document


def mail_section(document, port):
    """The document's email section (with its EMAIL_TIMEOUT) pointed at 127.0.0.1:port."""
    return dict(document['email'], host='127.0.0.1', port=port, use_tls=False, use_ssl=False,
                backend='django.core.mail.backends.smtp.EmailBackend')


LATE = EMAIL_TIMEOUT + 1.5  # late_reply: how late the reply to the final dot comes
HANG = {  # mode: (case, what the server did)
    'silent': ('no greeting', 'accepted every connection and never sent its greeting'),
    'stall_data': ('paused after DATA', 'stopped reading after DATA until it woke, then read on '
                   '(a paused server); a 6 MB notification among the small mails'),
    'late_reply': ('reply to the final dot too late',
                   'kept the first attempt of 3 mails at once but answered its final dot %.1f s '
                   'late' % LATE),
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize('mode', list(HANG))
def test_smtp_hanging(mode, short_timeout_project, worker_factory, client, celery_app,
                      redis_server, tmp_path, record):
    project = short_timeout_project
    server = cv_project.SmtpServer(tmp_path)
    front = Front(server.port, 'relay' if mode == 'late_reply' else mode)
    tag = 'hang-' + mode.replace('_', '')
    answer_late = {'%s-%s@example.com' % (tag, i) for i in ('0', '2', 'pdf')}
    late = set()  # the mails whose reply was withheld

    async def keep_then_answer_late(command, envelope, address):
        to = envelope.rcpt_tos[0] if command == 'DATA' else None
        if to in answer_late and to not in late:
            late.add(to)
            server.messages.append(envelope)  # kept: the server is now responsible for it
            await asyncio.sleep(LATE)
            return '250 OK'
        return None

    if mode == 'late_reply':
        server.hook = keep_then_answer_late
    try:
        w = start_worker(worker_factory, project, None,
                         sections={'email': mail_section(project, front.port)})
        rc1 = redis_server.client(1)
        ledger = Ledger()
        began = time.monotonic()
        recipients = send_mail_tasks(ledger, tag, 4)
        if mode == 'stall_data':  # far more than the socket buffers hold: its send blocks
            from cvtasks.tasks import notification
            big = ('x' * 70 + '\n') * (6 * 1024 * 1024 // 71)  # under the 16 MB message limit
            recipients[ledger.send(notification.send_notification_email.delay(
                ['big-hang@example.com'], 'big', big)).id] = 'big-hang@example.com'
        diags = [ledger.send(celery_app.diag.add.delay(i, i)).id for i in range(30)]
        hung_mails = [i for i in recipients if mode != 'late_reply'
                      or recipients[i] in answer_late]

        # The fault lasts until each hung mail task timed out at least once (and 4 s at least);
        # the other tasks must be done by then, while SMTP still hangs.
        interop.wait_for(lambda: time.monotonic() - began >= 4 and
                         all(retries(w, i) for i in hung_mails), 60,
                         message='every hung mail task timed out once')
        served_meanwhile = all(s == 'SUCCESS' for i, s in ledger.states(rc1).items()
                               if i in diags)
        hang = time.monotonic() - began
        front.mode = 'relay'
        ledger.wait(rc1, RECOVERY)
        interop.wait_for(lambda: all(s['closed'] for s in front.sessions), 15,
                         message='the clients hung up')

        tally = ledger.tally(rc1, [w])
        mismatches = []
        copies = count_at_server(tally, ledger, recipients, server, mismatches)
        check_email_log(project, ledger, recipients, mismatches)
        if not served_meanwhile:
            mismatches.append('the add() tasks did not all complete while SMTP hung')
        # Each copy the server kept is a whole message that went through the front; an extra
        # copy is allowed only from an attempt the worker gave up on (it timed out and retried)
        # although the server had the whole message: stalled with it, or kept it and answered
        # late.
        justified = {}
        for task_id, to in recipients.items():
            through = front.complete(to)
            justified[to] = (front.complete(to, stalled=True) if mode == 'stall_data'
                             else int(to in late))
            extra = copies[to] - 1
            if copies[to] != through:
                mismatches.append('%s: %d copies kept, %d went through' % (to, copies[to],
                                                                           through))
            if extra > min(justified[to], retries(w, task_id)):
                mismatches.append('%s: %d extra copies, %d justified, %d retries'
                                  % (to, extra, justified[to], retries(w, task_id)))
        duplicates = {to: n for to, n in copies.items() if n > 1}
        hung = [s for s in front.sessions if s['mode'] == mode]
        waits = [s['closed'] - s['opened'] for s in hung] or [0]
        if mode == 'silent' and not all(EMAIL_TIMEOUT - 0.1 < t < EMAIL_TIMEOUT + 2
                                        for t in waits):
            mismatches.append('silent connections held %s s, EMAIL_TIMEOUT is %s'
                              % (['%.1f' % t for t in waits], EMAIL_TIMEOUT))
        if mode == 'stall_data' and not retries(w, [i for i in recipients if
                                                    recipients[i] == 'big-hang@example.com'][0]):
            mismatches.append('the big mail never timed out')
        if mode == 'late_reply' and set(duplicates) != late:
            mismatches.append('duplicated %s, expected those answered late %s'
                              % (sorted(duplicates), sorted(late)))
        ids = collections.defaultdict(set)  # the copies of a mail are one message
        for m in server.messages:
            ids[m.rcpt_tos[0]].add(str(parsed(m)['Message-ID']))
        for to in duplicates:
            if len(ids[to]) != 1:
                mismatches.append('the copies to %s have Message-IDs %s' % (to, ids[to]))

        allowed = sum(justified.values())
        common = ('Each task ran to completion once, and the 30 add() completed on the other '
                  'pool slot while SMTP hung.')
        explanation = {
            'silent': 'Each attempt waited EMAIL_TIMEOUT for the greeting (%d connections held '
                      '%.1f-%.1f s), failed as transient and was retried with backoff. The '
                      'server never had a message before it answered, so each mail arrived '
                      'once. (With EMAIL_TIMEOUT None, Django\'s default, the worker waits 60 '
                      's; smtplib, and so a Python Celery worker, would wait for ever.) '
                      % (len(hung), min(waits), max(waits)),
            'stall_data': 'The small mails waited EMAIL_TIMEOUT for the reply to their final '
                          'dot, the 6 MB one in its blocked send (the socket now has a send '
                          'timeout: before, that send held its pool slot for good); each '
                          'attempt failed as transient and was retried. Allowed duplicates: '
                          'the %d attempts whose whole message (final dot included) sat in the '
                          'paused server. The server read and kept them on waking; %d of them '
                          'the worker had given up on by then, and their retries delivered '
                          'again: at-least-once (RFC 1047), as Django under Celery retries '
                          'would. An attempt cut off mid-DATA is discarded, so the big mail '
                          'arrived once. Copies carry the task\'s Message-ID. '
                          % (allowed, tally['duplicated']),
            'late_reply': 'Allowed duplicates: the %d mails answered late. The server kept them '
                          'but replied after EMAIL_TIMEOUT, so the worker could not know they '
                          'were delivered and retried: the at-least-once duplicate of RFC 1047 '
                          '("Duplicate messages and SMTP"), which Django under Celery retries '
                          'has too. Both copies carry the task\'s Message-ID, so mail stores '
                          'and clients can tell the second for a copy; the other mails arrived '
                          'once. ' % len(late),
        }[mode] + common
        rec = record('SMTP hanging: ' + HANG[mode][0],
                     '%d mail tasks and 30 add() on -c 2, EMAIL_TIMEOUT %.0f s (Django '
                     'setting); the SMTP server %s, for %.1f s'
                     % (len(recipients), EMAIL_TIMEOUT, HANG[mode][1], hang), tally, explanation,
                     allowed_duplicates=allowed,
                     extra={'mismatches': mismatches, 'mail_duplicates': duplicates,
                            'hang_seconds': round(hang, 1)})
        if mode == 'late_reply':
            assert allowed == len(answer_late) == tally['duplicated'], (allowed, tally)
        assert_case(rec, tally, w, mismatches)
    finally:
        front.stop()
        server.stop()


# ---------------------------------------------------------------- CV content injection

RAW_TEMPLATE = '''<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<h1>{{{full_name}}}</h1><div>{{{headline}}}</div><div>{{{summary}}}</div>
{{#skills}}<p>{{{.}}}</p>{{/skills}}
{{#experience}}<div>{{{title}}} {{{company}}} {{{description}}}</div>{{/experience}}
</body></html>'''


class Canary:
    """An HTTP server on loopback that counts the requests it gets (it should get none)."""

    def __init__(self):
        import http.server
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'CANARY-BODY')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def insert_rows(project, table, rows):
    cols = list(rows[0])
    cv_project.db_execute(project, 'INSERT INTO %s (%s) VALUES (%s)' % (
        table, ', '.join(cols), ', '.join('?' * len(cols))), [tuple(r.values()) for r in rows])


def add_cvs(project, users, cvs):
    """Users (Django's auth_user columns) and CVs (logical fields) with the given ids."""
    s = project['schema']
    user_t, cv_t = s['user']['table'], s['cv']['table']
    for table, pk, ids in ((cv_t, s['cv']['pk'], list(cvs)), (user_t, s['user']['pk'], list(users))):
        cv_project.db_execute(project, 'DELETE FROM %s WHERE %s = ?' % (table, pk),
                              [(i,) for i in ids])
    insert_rows(project, user_t, [{
        'id': pk, 'username': 'u%d' % pk, 'email': mail, 'first_name': '', 'last_name': '',
        'password': '!', 'is_superuser': 0, 'is_staff': 0, 'is_active': 1,
        'date_joined': '2026-01-01 00:00:00'} for pk, mail in users.items()])
    col = {f: d['column'] for f, d in s['cv']['fields'].items()}
    rows = []
    for pk, cv in cvs.items():
        row = {'id': pk, col['created_at']: '2026-01-01 00:00:00',
               col['updated_at']: '2026-01-01 00:00:00', col['email']: '', col['phone']: '',
               col['location']: '', col['headline']: '', col['summary']: ''}
        for field in ('skills', 'experience', 'education', 'languages'):
            row[col[field]] = json.dumps(cv.pop(field, []))
        row.update({col[f]: v for f, v in cv.items()})
        rows.append(row)
    for row in rows:  # the columns differ from CV to CV
        insert_rows(project, cv_t, [row])


def files_named(top, marker):
    out = []
    for folder, dirs, files in os.walk(top):
        out += [os.path.join(folder, n) for n in dirs + files if marker in n]
    return out


@pytest.mark.timeout(150)
def test_cv_content_injection(sqlite_project, worker_factory, client, redis_server, tmp_path,
                              record):
    project = sqlite_project
    media = os.path.realpath(project['media']['root'])
    marker = 'cvinj%x' % (int(time.time() * 1000) & 0xffffff)
    secret = tmp_path / 'secret.txt'
    secret.write_text('SECRET-%s-DO-NOT-LEAK\n' % marker)
    canary = Canary()
    web = 'http://127.0.0.1:%d' % canary.port
    leaked_markers = ('root:x:0:0', 'root:', 'SECRET-' + marker, 'CANARY-BODY', 'JSRAN')
    evil = 'evil@evil.example'
    js = "document.body.appendChild(document.createTextNode('JS'+'RAN'))"
    # With JavaScript and local files both allowed, this would copy the file into the page.
    read = ('<script>var x = new XMLHttpRequest(); x.open("GET", "file://%s", false); x.send(); '
            'document.write(x.responseText)</script>')
    html_cv = {
        'full_name': '<script>%s</script>Eve <b>Html</b>' % js,
        'headline': '<iframe src="file:///etc/passwd"></iframe><object data="file://%s"></object>'
                    % secret,
        'summary': '<img src="file:///etc/passwd" onerror="%s"><img src="%s/img.png">'
                   '<style>@import url("file://%s"); body{background:url(\'%s/bg.png\')}</style>'
                   '<link rel="stylesheet" href="%s/x.css"> {{{summary}}} {{#x}}y{{/x}}'
                   % (js, web, secret, web, web) + read % '/etc/passwd' + read % secret,
        'skills': ['<svg onload="%s"><image href="file:///etc/passwd"/></svg>' % js,
                   '<a href="javascript:%s">x</a>' % js],
        'experience': [{'title': '</td></tr></table><h1>INJECTED</h1>',
                        'company': '<meta http-equiv="refresh" content="0;url=file:///etc/passwd">',
                        'description': '<embed src="file://%s"><iframe src="%s/frame">' % (secret,
                                                                                           web)}],
        'languages': [{'name': '<u>x</u>', 'level': '"><script>%s</script>' % js}],
    }
    users = {801: 'eve-owner@example.com', 802: 'hdr-owner@example.com',
             803: 'owner@example.com\r\nBcc: %s' % evil, 804: 'path-owner@example.com'}
    cvs = {
        801: dict(html_cv, owner=801),
        802: {'owner': 802, 'full_name': 'Eve\r\nBcc: %s\r\nX-Injected: yes' % evil,
              'email': 'cv@example.com\r\nBcc: %s' % evil},
        803: {'owner': 803, 'full_name': 'Owner With A Bad Address'},
        804: {'owner': 804, 'full_name': '../../../../../../tmp/%s/owned' % marker,
              'location': '../../etc/passwd'},
        805: {'owner': 804, 'full_name': 'a/b/../../%s\x00.sh' % marker},
        806: {'owner': 804, 'full_name': '..\\..\\%s\\' % marker + '../' * 80},
    }
    add_cvs(project, users, cvs)
    templates = tmp_path / 'templates'
    (templates / 'careless').mkdir(parents=True)
    (templates / 'careless' / 'cv.html').write_text(RAW_TEMPLATE)

    server = cv_project.SmtpServer(tmp_path)
    try:
        from cvtasks.tasks import analysis, email as email_tasks, notification, pdf
        w, rc1, ledger = start_case(worker_factory, project, server, redis_server, None,
                                    pdf={'warm_processes': 1, 'templates_dir': str(templates)})
        before = time.time()
        pdfs, downloads, mails, refused = {}, {}, {}, {}
        # HTML and script: the shipped templates escape, the careless one does not (then only
        # wkhtmltopdf's lock-down stands between the CV and local files or the network).
        for template in ('classic', 'modern', 'careless'):
            pdfs[ledger.send(pdf.generate_cv_pdf_task.delay(801, template)).id] = (801, template)
        for cv_id in (801, 804, 805, 806):
            downloads[ledger.send(pdf.generate_cv_pdf_download_task.delay(cv_id)).id] = cv_id
        for cv_id, to in ((801, 'hr-html@example.com'), (802, 'hr-hdr@example.com'),
                          (804, 'hr-path@example.com'), (805, 'hr-nul@example.com')):
            mails[ledger.send(email_tasks.email_cv_pdf_task.delay(cv_id, to)).id] = to
        mails[ledger.send(email_tasks.send_cv_created_notification.delay(801)).id] = users[801]
        mails[ledger.send(notification.send_cv_updated_notification.delay(802)).id] = users[802]
        smuggle = ('line one\r\n.\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\nSubject: smuggled'
                   '\r\n\r\nsmuggled body\r\n.\r\n\n.\n\r\n.\nQUIT\r\n' % (evil, evil))
        mails[ledger.send(email_tasks.email_cv_pdf_task.delay(
            802, 'hr-hdr2@example.com', 'Hi\r\nBcc: %s\x00' % evil, smuggle)).id] = \
            'hr-hdr2@example.com'
        mails[ledger.send(notification.send_notification_email.delay(
            ['hr-smuggle@example.com'], 'Hello\nBcc: %s\nX-Injected: yes' % evil, smuggle)).id] = \
            'hr-smuggle@example.com'
        # Refused for good (ValueError, nothing sent): a path as the template, an address that
        # carries a header, the whole list when one recipient is bad, an owner's bad address.
        for template in ('../../../../etc', 'classic/../modern', 'classic\x00', '/etc'):
            refused[ledger.send(pdf.generate_cv_pdf_task.delay(801, template),
                                'FAILURE').id] = 'invalid template name'
        for args in ((email_tasks.email_cv_pdf_task, (802, 'hr@example.com\r\nBcc: %s' % evil)),
                     (notification.send_notification_email,
                      (['ok@example.com', 'x@example.com>\r\nBcc: %s' % evil], 's', 'm')),
                     (email_tasks.send_notification_email,
                      (['"%s" <ok@example.com>, %s' % (evil, evil)], 's', 'm')),
                     (email_tasks.send_cv_created_notification, (803,))):
            refused[ledger.send(args[0].delay(*args[1]), 'FAILURE').id] = 'invalid email address'
        analyses = {}
        for cv_id, jd in ((801, '<script>%s</script> Python ../../etc/passwd' % js),
                          (805, 'C++\x00\r\nBcc: %s' % evil)):
            analyses[ledger.send(analysis.analyze_cv_task.delay(cv_id, jd)).id] = (cv_id, jd)
        ledger.wait(rc1, RECOVERY)
        server.wait_messages(len(mails), 5)
        time.sleep(0.5)  # a stray extra mail would arrive by now

        tally = ledger.tally(rc1, [w])
        mismatches = []
        copies = count_at_server(tally, ledger, mails, server, mismatches)

        def leaks(text, where):
            for bad in leaked_markers:
                if bad in text:
                    mismatches.append('%s: %r in the PDF text' % (where, bad))

        for task_id, (cv_id, template) in pdfs.items():
            m = interop.meta(rc1, task_id) or {}
            if m.get('status') != 'SUCCESS':
                continue
            text = cv_project.pdf_text(base64.b64decode(m['result']['pdf_base64']), tmp_path)
            leaks(text, 'cv %d %s' % (cv_id, template))
            if template != 'careless' and '<script>document.body.appendChild(' not in text:
                mismatches.append('cv %d %s: the markup is not shown as text' % (cv_id, template))
        gp = project['schema']['generated_pdf']
        for task_id, cv_id in downloads.items():
            m = interop.meta(rc1, task_id) or {}
            if m.get('status') != 'SUCCESS':
                continue
            path = os.path.realpath(m['result']['path'])
            if os.path.dirname(path) != os.path.join(media, 'cv_pdfs') or not re.fullmatch(
                    r'cv_%d(_[a-z0-9-]+)?_\d{8}T\d{6}_[0-9a-f]{6}\.pdf' % cv_id,
                    os.path.basename(path)):
                mismatches.append('cv %d: PDF written as %r' % (cv_id, path))
            with open(path, 'rb') as f:
                leaks(cv_project.pdf_text(f.read(), tmp_path), 'cv %d download' % cv_id)
            rows = cv_project.db_query(project, 'SELECT %s FROM %s WHERE %s = ?' % (
                gp['fields']['file']['column'], gp['table'], gp['fields']['task_id']['column']),
                (task_id,))
            if rows != [(os.path.relpath(path, media),)]:
                mismatches.append('cv %d: generated_pdf rows %s' % (cv_id, rows))
        for envelope in server.messages:
            msg = parsed(envelope)
            where = 'mail to %s' % envelope.rcpt_tos
            if any('evil' in r for r in envelope.rcpt_tos) or msg['Bcc'] or msg['X-Injected'] \
                    or 'smuggled' == str(msg['Subject']):
                mismatches.append('%s: injected header or recipient: %s' % (where, msg.items()))
            if '\n' in str(msg['Subject']) or '\r' in str(msg['Subject']):
                mismatches.append('%s: subject %r' % (where, str(msg['Subject'])))
            # RFC 5321 2.3.8: CRLF only. A bare LF would let "<LF>.<CR><LF>" end the data on
            # servers that accept it, and the "MAIL FROM" after it run as a command (smuggling).
            for bare in re.finditer(rb'(?<!\r)\n|\r(?!\n)', envelope.original_content):
                mismatches.append('%s: bare %s on the wire: %r' % (
                    where, 'LF' if bare.group() == b'\n' else 'CR',
                    envelope.original_content[max(0, bare.start() - 20):bare.end() + 20]))
                break
            for part in msg.walk():
                if part.get_content_type() == 'text/html' and '<script>' in part.get_content():
                    mismatches.append('%s: <script> in the HTML body' % where)
                if part.get_content_type() == 'application/pdf':
                    if not re.fullmatch(r'cv_\d+(_[a-z0-9-]+)?\.pdf', part.get_filename() or ''):
                        mismatches.append('%s: attachment named %r' % (where,
                                                                       part.get_filename()))
                    leaks(cv_project.pdf_text(part.get_content(), tmp_path), where)
        for task_id, why in refused.items():
            result = (interop.meta(rc1, task_id) or {}).get('result') or {}
            if result.get('exc_type') != 'ValueError' or why not in str(result.get('exc_message')):
                mismatches.append('%s: expected ValueError %r, got %s' % (task_id, why, result))
        ca = project['schema']['cv_analysis']
        for task_id, (cv_id, jd) in analyses.items():
            rows = cv_project.db_query(project, 'SELECT %s FROM %s WHERE %s = ?' % (
                ca['fields']['job_description']['column'], ca['table'],
                ca['fields']['task_id']['column']), (task_id,))
            if len(rows) != 1 or rows[0][0] != jd:
                mismatches.append('analysis of cv %d: stored %r' % (cv_id, rows))
        if canary.hits:
            mismatches.append('the canary web server was called: %s' % canary.hits)
        # Nothing named after the CVs outside MEDIA_ROOT/cv_pdfs, and nothing new beside it.
        data_dir = os.path.dirname(media)
        for top in ('/tmp', interop.ROOT, data_dir):
            for path in files_named(top, marker):
                if os.path.dirname(os.path.realpath(path)) != os.path.join(media, 'cv_pdfs'):
                    mismatches.append('file outside MEDIA_ROOT/cv_pdfs: %s' % path)
        for path in os.listdir(data_dir):
            full = os.path.join(data_dir, path)
            if full != media and not path.startswith('db.sqlite3') and \
                    os.path.getmtime(full) >= before:
                mismatches.append('new file beside MEDIA_ROOT: %s' % full)

        rec = record(
            'CV content injection',
            'CVs crafted for HTML/script (<script>, <iframe>/<img>/<object>/<embed> on '
            'file:///etc/passwd and a secret file, CSS @import/url(), links to a canary web '
            'server), mail-header injection (CR/LF + Bcc in names, subjects, addresses; SMTP '
            'smuggling dots in bodies) and path injection (../, / and NUL in names, paths as '
            'template names) through %d tasks: PDF (shipped templates and a careless raw '
            'template), download, email, notifications, analysis' % tally['sent'], tally,
            '%d ended in SUCCESS with the content escaped or neutralised: the shipped templates '
            'show the markup as text; through the careless raw template wkhtmltopdf read no '
            'local file, ran no script and called nothing (the canary got no request); header '
            'values lost their CR/LF; file and attachment names are slugs; downloads landed in '
            'MEDIA_ROOT/cv_pdfs only. %d ended in a clear FAILURE (ValueError) where refusing is '
            'right: a path as the template name, an address carrying a header (the whole '
            'recipient list is refused, nothing sent). The SMTP server got %d mails, each once, '
            'to the intended recipient only; no /etc/passwd or secret text in any PDF '
            '(pdftotext).' % (tally['sent'] - len(refused), len(refused),
                              sum(copies.values())),
            extra={'mismatches': mismatches})
        assert_case(rec, tally, w, mismatches)
    finally:
        server.stop()
        canary.stop()
