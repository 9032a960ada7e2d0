"""analyze_cv_task end to end: Python sends through the cvtasks proxy, our worker reads the
CVProject's database (SQLite, and PostgreSQL started here), stores the analysis and returns it;
the optional LLM provider is an OpenAI-compatible endpoint served on loopback by the test."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import cv_project

QUEUES = ['-Q', 'analysis_queue', '-c', '2']


def start_worker(worker_factory, document, **tasks):
    return cv_project.start_worker(worker_factory, document, QUEUES, **tasks)

JOB = 'We are hiring a backend engineer: Python, Django, Kubernetes and Terraform.'


def stored(document, task_id):
    s = document['schema']['cv_analysis']
    f = s['fields']
    rows = cv_project.db_query(document, 'SELECT %s, %s, %s, %s FROM %s WHERE %s = ?' % (
        f['score']['column'], f['provider']['column'], f['result']['column'],
        f['cv']['column'], s['table'], f['task_id']['column']), (task_id,))
    assert len(rows) == 1, rows
    score, provider, result, cv = rows[0]
    return score, provider, result if isinstance(result, dict) else json.loads(result), cv


def test_analysis_is_returned_and_stored(project, worker_factory, client):
    start_worker(worker_factory, project)
    from cvtasks.tasks.analysis import analyze_cv_task
    result = analyze_cv_task.delay(cv_id=1, job_description=JOB)
    r = result.get(timeout=60)
    assert 0 <= r['score'] <= 100 and r['provider'] == 'builtin' and r['cv_id'] == 1
    assert set(r['breakdown']) == {'completeness', 'content', 'readability', 'skills',
                                   'job_match'}
    found = {s['name'] for s in r['skills']['found']}
    assert {'Python', 'Django', 'Kubernetes', 'PostgreSQL'} <= found
    assert r['job_match']['matched'] == ['Python', 'Django', 'Kubernetes']
    assert r['job_match']['missing'] == ['Terraform']
    assert any('Terraform' in s for s in r['suggestions'])
    score, provider, stored_result, cv = stored(project, result.id)
    assert (score, provider, cv) == (r['score'], 'builtin', 1)
    assert stored_result['breakdown'] == r['breakdown']

    # The hostile CV and a non-Latin one are just text to the analyzer.
    for cv_id in (2, 3, 4):
        r = analyze_cv_task.delay(cv_id).get(timeout=60)
        assert 0 <= r['score'] <= 100 and r['job_match'] is None
    assert analyze_cv_task.delay(2).get(timeout=60)['readability']['script'] == 'other'


def test_missing_cv_is_a_failure_python_re_raises(sqlite_project, worker_factory, client):
    start_worker(worker_factory, sqlite_project)
    from cvtasks.errors import CVNotFound
    from cvtasks.tasks.analysis import analyze_cv_task
    with pytest.raises(CVNotFound, match='CV with id 999 does not exist'):
        analyze_cv_task.delay(999).get(timeout=30)


class FakeProvider:
    """An OpenAI-compatible /v1/chat/completions on loopback; `status` and `content` script it."""

    def __init__(self):
        self.status, self.content, self.requests = 200, '{}', []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                outer.requests.append((self.path, self.headers.get('Authorization'), body))
                reply = json.dumps({'choices': [{'message': {'role': 'assistant',
                                                             'content': outer.content}}]})
                self.send_response(outer.status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(reply)))
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = 'http://127.0.0.1:%d/v1' % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider():
    p = FakeProvider()
    yield p
    p.close()


def test_llm_answer_is_merged_and_a_failure_falls_back(sqlite_project, worker_factory, client,
                                                       provider):
    start_worker(worker_factory, sqlite_project, analysis={
        'llm': {'base_url': provider.url, 'api_key': 'sk-test', 'model': 'm1', 'timeout': 5}})
    from cvtasks.tasks.analysis import analyze_cv_task
    provider.content = json.dumps({'score': 90, 'summary': 'Strong backend profile.',
                                   'strengths': ['Python'],
                                   'suggestions': ['Add a link to your GitHub profile.']})
    result = analyze_cv_task.delay(1)
    r = result.get(timeout=60)
    path, auth, body = provider.requests[-1]
    assert path == '/v1/chat/completions' and auth == 'Bearer sk-test' and body['model'] == 'm1'
    assert 'Alice Martin' in body['messages'][1]['content']
    assert r['provider'] == 'llm:m1' and r['llm']['summary'] == 'Strong backend profile.'
    assert r['score'] == round((r['builtin_score'] + 90) / 2)
    assert 'Add a link to your GitHub profile.' in r['suggestions']
    assert stored(sqlite_project, result.id)[1] == 'llm:m1'

    provider.status = 503
    result = analyze_cv_task.delay(1)
    r = result.get(timeout=60)
    assert r['provider'] == 'builtin' and r['llm']['used'] is False
    assert 'HTTP 503' in r['llm']['error']
    assert 'builtin_score' not in r and 0 <= r['score'] <= 100
    assert stored(sqlite_project, result.id)[1] == 'builtin'
