"""mysite/jobs.py: the Kathikon app of a Django project, and its workers.

The web process imports it from views (`from mysite.jobs import send_welcome`);
`kathikon worker mysite.jobs:app` imports it first of all, so it sets Django up itself.
"""

import os

import django
from django.apps import apps

if not apps.ready:  # imported by `kathikon worker`, outside a running Django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.mail import send_mail  # noqa: E402

import kathikon  # noqa: E402

app = kathikon.Kathikon(settings.KATHIKON_STORE, queues={"default": 10, "emails": 5})


@app.worker(queue="emails", max_attempts=5)
def send_welcome(job: kathikon.Job) -> None:
    user = User.objects.get(pk=job.args["user_id"])
    send_mail("Welcome", "Glad you are here.", None, [user.email])
