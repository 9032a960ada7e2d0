"""Values a careless caller sends, as Python Celery sends them (issue 19): each must end as the
Python task would end it, with the same exception type, and leave nothing that breaks Django.
Every test here failed on the worker before its fix (checked against that binary):

  D5  a subject of 254 "a" and a euro sign was cut at 255 bytes, inside the euro sign, and the
      email_log row could not be read back (sqlite3: "Could not decode to UTF-8 column")
  D6  a 1500-character subject went out on one line: "500 Line too long", a permanent failure
  D18 generate_daily_stats('0000-01-01') succeeded and wrote a row dated year 0
  D20 cv_id 2**63 was reported as "CV with id -9223372036854775808", 2**64-1 as id -1

    /usr/bin/python3 -m pytest -q tests/interop/test_hostile_values.py
"""
import email
import email.policy

import pytest

import cv_project

QUEUES = ['-Q', 'email_queue,notification_queue,statistics_queue,cleanup_queue', '-c', '2']


@pytest.fixture
def worker(sqlite_project, worker_factory, smtp, client):
    return cv_project.start_worker(worker_factory, sqlite_project, QUEUES, smtp)


def email_log_subject(project, task_id):
    log = project['schema']['email_log']
    f = log['fields']
    [(subject,)] = cv_project.db_query(project, 'SELECT %s FROM %s WHERE %s = ?' % (
        f['subject']['column'], log['table'], f['task_id']['column']), (task_id,))
    return subject


def delivered(smtp, n):
    return [email.message_from_bytes(m.original_content, policy=email.policy.default)
            for m in smtp.wait_messages(n)]


def test_subject_is_cut_by_characters_for_the_email_log(sqlite_project, worker, smtp):
    """D5: EmailLog.subject (max_length 255) holds 255 characters, the euro sign whole."""
    from cvtasks.tasks import notification
    subject = 'a' * 254 + '\u20ac tail'
    r = notification.send_notification_email.delay(['x@example.com'], subject, 'b')
    assert r.get(timeout=30)['status'] == 'sent'
    assert email_log_subject(sqlite_project, r.id) == 'a' * 254 + '\u20ac'
    [msg] = delivered(smtp, 1)
    assert msg['Subject'] == subject  # the mail itself carries the whole subject


@pytest.mark.parametrize('subject', [
    ' '.join(['word%04d' % i for i in range(167)])[:1500],  # ASCII words
    'x' * 1500,                                              # one word, longer than any line
    ('\u5f20\u4f1f \u20ac ' * 300)[:1500],                    # non-ASCII
], ids=['words', 'one-word', 'non-ascii'])
def test_a_1500_character_subject_is_folded(worker, smtp, subject):
    """D6: the Subject header is folded into lines an SMTP server takes, and reads back whole."""
    from cvtasks.tasks import notification
    assert len(subject) == 1500
    r = notification.send_notification_email.delay(['fold@example.com'], subject, 'b')
    assert r.get(timeout=30)['status'] == 'sent'
    [envelope] = smtp.wait_messages(1)
    raw = envelope.original_content
    head = raw[:raw.index(b'\r\n\r\n')]
    assert max(len(line) for line in head.split(b'\r\n')) <= 78
    assert delivered(smtp, 1)[0]['Subject'] == subject


@pytest.mark.parametrize('value', [2 ** 63, 2 ** 64 - 1, 2 ** 64, -2 ** 63 - 1,
                                   '99999999999999999999'])
def test_an_id_that_does_not_fit_is_an_overflow_error(worker, value):
    """D20: never wrapped to another id; OverflowError, as Django's driver raises for it."""
    from cvtasks.tasks import notification
    r = notification.send_cv_created_notification.delay(value)
    with pytest.raises(OverflowError, match='cv_id -?[0-9]+ does not fit in a 64-bit integer'):
        r.get(timeout=30)


def test_days_that_do_not_fit_is_an_overflow_error(worker):
    from cvtasks.tasks import cleanup
    for days in (2 ** 64 - 1, 2 ** 64):  # the second one arrives as a big integer
        with pytest.raises(OverflowError):
            cleanup.cleanup_old_logs.delay(days=days).get(timeout=30)


def daily_stats_dates(project):
    s = project['schema']['daily_stats']
    return [d for (d,) in cv_project.db_query(project, 'SELECT CAST(%s AS TEXT) FROM %s' % (
        s['fields']['date']['column'], s['table']))]


def test_a_date_python_cannot_hold_is_refused(sqlite_project, worker):
    """D18: year 0 is a ValueError, as date.fromisoformat says; a week reaching year 10000 an
    OverflowError, as date arithmetic says; no row Django could not read is written."""
    from cvtasks.tasks import statistics
    with pytest.raises(ValueError, match='year 0 is out of range'):
        statistics.generate_daily_stats.delay('0000-01-01').get(timeout=30)
    with pytest.raises(OverflowError, match='date value out of range'):
        statistics.generate_weekly_report.delay('9999-12-27').get(timeout=30)
    assert statistics.generate_daily_stats.delay('9999-12-31').get(timeout=30)
    dates = daily_stats_dates(sqlite_project)
    assert '9999-12-31' in dates
    assert not [d for d in dates if not '0001-01-01' <= d <= '9999-12-31'], dates
