"""The platform's own answers table, with its own column names."""

from __future__ import annotations

from django.db import models


class Answer(models.Model):
    uuid = models.CharField(max_length=64, unique=True)
    learner_id = models.BigIntegerField()
    sub_topic_id = models.BigIntegerField()
    learning_mode = models.CharField(max_length=32)
    question_id = models.BigIntegerField()
    difficulty = models.CharField(max_length=16)
    is_correct = models.BooleanField()
    answered_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"answer {self.uuid}"
