"""Analysis tasks (queue ``analysis_queue``)."""
from ._proxy import proxy


@proxy
def analyze_cv_task(cv_id, job_description=None):
    """Score the CV, extract skills, suggest improvements; stored as a CVAnalysis."""
