"""mysite/views.py: a view that inserts a job."""

from django.http import HttpRequest, JsonResponse

from mysite.jobs import send_welcome


def signup_done(request: HttpRequest) -> JsonResponse:
    job = send_welcome.insert({"user_id": request.user.pk})
    return JsonResponse({"job": job.id})
