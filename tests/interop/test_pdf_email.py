"""PDF, email and notification tasks end to end: Python sends through the cvtasks proxies, our
worker reads the CVProject's real database (SQLite, and PostgreSQL started here), renders with
real wkhtmltopdf and mails through a real aiosmtpd (plain and STARTTLS).

    /usr/bin/python3 -m pytest -q tests/interop/test_pdf_email.py
"""
import base64
import email
import email.policy
import os

import pytest

import cv_project
from cv_project import pdf_text

ZHANG = '张伟'
LAYLA = 'ليلى'
QUEUES = ['-Q', 'pdf_queue,email_queue,notification_queue', '-c', '2']


def start_worker(worker_factory, document, smtp=None, starttls=False, **tasks):
    return cv_project.start_worker(worker_factory, document, QUEUES, smtp, starttls, **tasks)


def test_generate_cv_pdf_task_returns_a_pdf_with_the_names(project, worker_factory, client,
                                                            tmp_path):
    start_worker(worker_factory, project)
    from cvtasks.tasks import pdf
    texts = {}
    for cv_id, template in ((1, None), (2, 'modern'), (3, 'classic')):
        r = pdf.generate_cv_pdf_task.delay(cv_id=cv_id, template=template).get(timeout=60)
        data = base64.b64decode(r['pdf_base64'])
        assert data.startswith(b'%PDF-') and len(data) == r['size']
        assert r['cv_id'] == cv_id and r['filename'].startswith('cv_%d' % cv_id)
        texts[cv_id] = pdf_text(data, tmp_path)
    assert 'Alice Martin' in texts[1]
    assert ZHANG in texts[2]
    # pdftotext gives Arabic in presentation forms: compare after NFKC.
    import unicodedata
    assert LAYLA in unicodedata.normalize('NFKC', texts[3]) or LAYLA[::-1] in \
        unicodedata.normalize('NFKC', texts[3])


def test_hostile_cv_is_escaped_and_reads_no_local_file(project, worker_factory, client,
                                                       tmp_path):
    start_worker(worker_factory, project)
    from cvtasks.tasks import pdf
    for template in ('classic', 'modern'):
        r = pdf.generate_cv_pdf_task.delay(4, template).get(timeout=60)
        text = pdf_text(base64.b64decode(r['pdf_base64']), tmp_path)
        # The markup is shown as text, not interpreted ...
        assert "<script>alert('xss')" in text and 'Mallory' in text
        assert '<iframe' in text and 'file:///etc/passwd' in text
        assert '<img src="http://203.0.113.7/track.png">' in text
        assert '{{' in text and 'mustache' in text
        # ... and nothing of the local files it names reached the PDF.
        assert 'root:x:0:0' not in text and 'root:' not in text


def test_missing_cv_is_a_failure_python_re_raises(project, worker_factory, client):
    start_worker(worker_factory, project)
    from cvtasks.errors import CVNotFound
    from cvtasks.tasks import pdf
    result = pdf.generate_cv_pdf_task.delay(cv_id=424242)
    with pytest.raises(CVNotFound, match='CV with id 424242 does not exist'):
        result.get(timeout=30)
    assert result.state == 'FAILURE'


def test_download_task_writes_the_file_and_the_row(project, worker_factory, client):
    start_worker(worker_factory, project)
    from cvtasks.tasks import pdf
    result = pdf.generate_cv_pdf_download_task.delay(2)
    r = result.get(timeout=60)
    media = project['media']
    relative = os.path.relpath(r['path'], media['root'])
    assert relative.startswith('cv_pdfs' + os.sep) and r['url'] == media['url'] + relative
    with open(r['path'], 'rb') as f:
        assert f.read(5) == b'%PDF-'
    assert os.path.getsize(r['path']) == r['size']
    s = project['schema']['generated_pdf']
    f = s['fields']
    rows = cv_project.db_query(
        project, 'SELECT %s, %s, %s FROM %s WHERE %s = ?' % (
            f['file']['column'], f['size_bytes']['column'], f['cv']['column'], s['table'],
            f['task_id']['column']), (result.id,))
    assert rows == [(relative, r['size'], 2)]


def test_email_cv_pdf_attaches_the_pdf(project, worker_factory, client, smtp, tmp_path):
    start_worker(worker_factory, project, smtp)
    from cvtasks.tasks import email as email_tasks
    r = email_tasks.email_cv_pdf_task.delay(2, 'hr@example.com').get(timeout=60)
    assert r['status'] == 'sent'
    [envelope] = smtp.wait_messages(1)
    assert envelope.rcpt_tos == ['hr@example.com']
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert msg['Message-ID'] == r['message_id']
    assert ZHANG in str(msg['Subject'])
    assert msg.get_body(('plain',)).get_content().startswith('Please find attached')
    assert msg.get_body(('html',)) is not None
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_content_type() == 'application/pdf'
    assert ZHANG in pdf_text(attachment.get_content(), tmp_path)
    log = project['schema']['email_log']
    rows = cv_project.db_query(project, 'SELECT %s, %s FROM %s WHERE %s = ?' % (
        log['fields']['status']['column'], log['fields']['kind']['column'], log['table'],
        log['fields']['recipients']['column']), ('["hr@example.com"]',))
    assert ('sent', 'cv_pdf') in rows


def test_header_injection_from_cv_fields_is_refused(project, worker_factory, client, smtp):
    start_worker(worker_factory, project, smtp)
    from cvtasks.tasks import email as email_tasks
    # CV 4's own email holds "\r\nBcc: victims@example.com"; as a recipient it is refused.
    with pytest.raises(ValueError, match='invalid email address'):
        email_tasks.send_notification_email.delay(
            ['mallory@example.com\r\nBcc: victims@example.com'], 'hi', 'x').get(timeout=30)
    # In a subject the CR/LF are removed: one Subject header, no Bcc.
    email_tasks.send_notification_email.delay(
        ['ok@example.com'], 'Hello\r\nBcc: victims@example.com', 'body').get(timeout=30)
    [envelope] = smtp.wait_messages(1)
    assert envelope.rcpt_tos == ['ok@example.com']
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert msg['Bcc'] is None and 'victims' not in ''.join(msg.get_all('To'))
    assert str(msg['Subject']) == 'HelloBcc: victims@example.com'


def test_notifications_in_both_modules(project, worker_factory, client, smtp):
    start_worker(worker_factory, project, smtp)
    from cvtasks.tasks import email as email_tasks, notification
    a = email_tasks.send_cv_created_notification.delay(1).get(timeout=30)
    b = notification.send_cv_updated_notification.delay(3).get(timeout=30)
    assert a['recipients'] == ['alice@example.com'] and b['recipients'] == ['layla@example.com']
    msgs = smtp.wait_messages(2)
    subjects = sorted(str(email.message_from_bytes(m.original_content,
                                                   policy=email.policy.default)['Subject'])
                      for m in msgs)
    assert subjects[0] == 'Your CV "Alice Martin" was created'
    assert LAYLA in subjects[1] and subjects[1].endswith('was updated')


def test_4xx_retries_with_backoff_then_sends_and_5xx_fails(sqlite_project, worker_factory,
                                                           client, smtp):
    w = start_worker(worker_factory, sqlite_project, smtp)
    from cvtasks.errors import EmailDeliveryError
    from cvtasks.tasks import notification
    smtp.replies = ['451 4.3.0 try again later', '451 4.3.0 try again later']
    r = notification.send_notification_email.delay(['a@example.com'], 's', 'm').get(timeout=30)
    assert r['status'] == 'sent' and len(smtp.messages) == 1
    assert w.log.count('retry') >= 2 and 'retry 1 of 2 in 0.2s' in w.log \
        and 'retry 2 of 2 in 0.4s' in w.log
    smtp.replies = ['550 5.7.1 relaying denied']
    with pytest.raises(EmailDeliveryError, match='550 5.7.1 relaying denied'):
        notification.send_notification_email.delay(['b@example.com'], 's', 'm').get(timeout=30)
    assert len(smtp.messages) == 1


def test_starttls_delivery(sqlite_project, worker_factory, client, tmp_path):
    project = sqlite_project
    server = cv_project.SmtpServer(tmp_path, starttls=True)
    try:
        start_worker(worker_factory, project, server, starttls=True)
        from cvtasks.tasks import email as email_tasks
        r = email_tasks.email_cv_pdf_task.delay(3, 'tls@example.com', 'Über', 'Bonjour').get(
            timeout=60)
        assert r['status'] == 'sent'
        [envelope] = server.wait_messages(1)
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert str(msg['Subject']) == 'Über'
        assert [a.get_content_type() for a in msg.iter_attachments()] == ['application/pdf']
    finally:
        server.stop()


def test_unreachable_database_retries_and_the_worker_lives_on(pg_project, worker_factory,
                                                              client):
    project = pg_project
    doc = dict(project, databases={'default': dict(project['databases']['default'],
                                                   PORT=str(cv_project.free_port()))})
    w = start_worker(worker_factory, doc)
    from cvtasks.errors import DatabaseError
    from cvtasks.tasks import pdf
    with pytest.raises(DatabaseError, match='cannot connect'):
        pdf.generate_cv_pdf_task.delay(1).get(timeout=60)
    assert w.alive
    assert w.log.count('retry: Retry in') == 3 and 'Retry in 0.4s' in w.log
