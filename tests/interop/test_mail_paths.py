"""The mail and PDF paths issue 4 asks for beyond the basics: SMTP over TLS from the first byte
(EMAIL_USE_SSL), SMTP AUTH over STARTTLS (a right and a wrong password), and a PDF task's time
limits killing the wkhtmltopdf process that renders it.

    /usr/bin/python3 -m pytest -q tests/interop/test_mail_paths.py
"""
import email
import email.policy
import os
import time

import pytest

import cv_project
from cv_project import pdf_text

QUEUES = ['-Q', 'pdf_queue,email_queue,notification_queue', '-c', '2']


def start_worker(worker_factory, document, smtp=None, starttls=False, **kwargs):
    return cv_project.start_worker(worker_factory, document, QUEUES, smtp, starttls, **kwargs)


def email_log(project, recipients):
    log = project['schema']['email_log']
    f = log['fields']
    return cv_project.db_query(project, 'SELECT %s, %s, %s FROM %s WHERE %s = ?' % (
        f['status']['column'], f['kind']['column'], f['error']['column'], log['table'],
        f['recipients']['column']), (recipients,))


# ---------------------------------------------------------------- SMTP

def test_smtp_over_ssl_from_the_first_byte(sqlite_project, worker_factory, client, tmp_path):
    server = cv_project.SmtpServer(tmp_path, implicit_tls=True)
    try:
        start_worker(worker_factory, sqlite_project, server, mail_options={'use_ssl': True})
        from cvtasks.tasks import email as email_tasks
        r = email_tasks.email_cv_pdf_task.delay(1, 'ssl@example.com').get(timeout=60)
        assert r['status'] == 'sent'
        [envelope] = server.wait_messages(1)
        assert envelope.rcpt_tos == ['ssl@example.com']
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert msg['Message-ID'] == r['message_id']
        [attachment] = list(msg.iter_attachments())
        assert attachment.get_content_type() == 'application/pdf'
        assert 'Alice Martin' in pdf_text(attachment.get_content(), tmp_path)
        assert email_log(sqlite_project, '["ssl@example.com"]')[0][:2] == ('sent', 'cv_pdf')
    finally:
        server.stop()


@pytest.mark.parametrize('mechanism', ['PLAIN', 'LOGIN'])
def test_smtp_login_over_starttls_right_and_wrong_password(sqlite_project, worker_factory,
                                                           client, tmp_path, mechanism):
    # LOGIN alone: aiosmtpd prompts "User Name", which Poco's own AUTH LOGIN did not answer.
    project = sqlite_project
    server = cv_project.SmtpServer(tmp_path, starttls=True, logins={'mailer': 'p4ss w0rd'},
                                   auth_mechanisms=(mechanism,))
    try:
        from cvtasks.errors import EmailDeliveryError
        from cvtasks.tasks import email as email_tasks
        w = start_worker(worker_factory, project, server, starttls=True,
                         mail_options={'host_user': 'mailer', 'host_password': 'p4ss w0rd'})
        r = email_tasks.email_cv_pdf_task.delay(2, 'auth@example.com').get(timeout=60)
        assert r['status'] == 'sent'
        [envelope] = server.wait_messages(1)
        assert envelope.rcpt_tos == ['auth@example.com']
        assert server.auth_attempts == [(mechanism, 'mailer', True)]
        w.stop()

        w = start_worker(worker_factory, project, server, starttls=True,
                         mail_options={'host_user': 'mailer', 'host_password': 'Wr0ngPa55'})
        denied = 'denied-%s@example.com' % mechanism.lower()  # the project is shared
        result = email_tasks.send_notification_email.delay([denied], 's', 'm')
        with pytest.raises(EmailDeliveryError, match='535') as failure:
            result.get(timeout=30)
        assert 'Wr0ngPa55' not in str(failure.value)
        assert result.state == 'FAILURE'
        # 5xx: failed at once, no retry, nothing delivered.
        assert '; retry ' not in w.log and 'Retry in' not in w.log
        assert server.auth_attempts == [(mechanism, 'mailer', True),
                                       (mechanism, 'mailer', False)]
        assert len(server.messages) == 1
        [(status, kind, error)] = email_log(project, '["%s"]' % denied)
        assert (status, kind) == ('failed', 'notification') and '535' in error
    finally:
        server.stop()


# ---------------------------------------------------------------- time limits

def wkhtmltopdf_children(pid):
    """{pid: state} of the wkhtmltopdf processes whose parent is `pid` (zombies included)."""
    found = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index('(') + 1:stat.rindex(')')]
        state, ppid = stat[stat.rindex(')') + 2:].split()[:2]
        if int(ppid) == pid and name.startswith('wkhtmltopdf'):
            found[int(entry)] = state
    return found


def slow_templates(tmp_path):
    """A project template whose page takes wkhtmltopdf seconds: 40000 table rows."""
    folder = tmp_path / 'templates' / 'slow'
    folder.mkdir(parents=True)
    row = '<tr><td>%d</td><td>' + 'lorem ipsum dolor sit amet ' * 4 + '</td></tr>'
    rows = ''.join(row % i for i in range(40000))
    (folder / 'cv.html').write_text('<html><body><h1>{{full_name}}</h1><table>%s</table>'
                                    '</body></html>' % rows)
    return str(tmp_path / 'templates')


@pytest.mark.parametrize('limit,warm', [('hard', 1), ('soft', 1), ('hard', 0)],
                         ids=['hard-warm', 'soft-warm', 'hard-one-shot'])
def test_time_limit_kills_the_renderer(sqlite_project, worker_factory, client, tmp_path, limit,
                                       warm):
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
    from cvtasks.tasks import pdf
    w = start_worker(worker_factory, sqlite_project,
                     pdf={'warm_processes': warm, 'templates_dir': slow_templates(tmp_path)})
    # Warm up: with a warm process this leaves exactly one, idle, for the slow render to take.
    assert pdf.generate_cv_pdf_task.delay(1).get(timeout=60)['cv_id'] == 1
    before = wkhtmltopdf_children(w.pid)
    assert len(before) == warm

    options = {'time_limit': 1.0} if limit == 'hard' else {'soft_time_limit': 1.0}
    start = time.monotonic()
    result = pdf.generate_cv_pdf_task.apply_async(args=(2, 'slow'), **options)
    rendering = set()
    while not result.ready() and time.monotonic() - start < 30:
        rendering |= set(wkhtmltopdf_children(w.pid))
        time.sleep(0.02)
    expected = TimeLimitExceeded if limit == 'hard' else SoftTimeLimitExceeded
    with pytest.raises(expected):
        result.get(timeout=1)
    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 5, elapsed  # stopped by the limit, not by the render's end
    assert rendering, 'no wkhtmltopdf process was seen rendering'

    # The process that rendered is gone (killed and reaped: not even a zombie); with warm
    # processes it was the pool's only one, so no wkhtmltopdf child is left at all.
    deadline = time.monotonic() + 5
    while wkhtmltopdf_children(w.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wkhtmltopdf_children(w.pid) == {}
    for pid in rendering:
        assert not os.path.exists('/proc/%d' % pid), pid

    # The worker lives on and renders the next PDF.
    assert w.alive
    assert pdf.generate_cv_pdf_task.delay(3).get(timeout=60)['cv_id'] == 3
    assert len(wkhtmltopdf_children(w.pid)) == warm
    if limit == 'hard':
        assert 'Hard time limit (1s) exceeded' in w.log
    else:
        assert 'Soft time limit exceeded' in w.log
