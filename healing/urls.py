from django.urls import path

from healing import views

urlpatterns = [
    path("approvals/", views.approvals, name="approvals"),
    path("proposals/<int:proposal_id>/decide", views.decide, name="decide"),
    path("proposals/<int:proposal_id>/review", views.review, name="review"),
    path("learner/", views.learner, name="learner"),
    path("pauses/", views.pause, name="pause"),
    path("pauses/<int:pause_id>/end", views.end_pause, name="end_pause"),
]
