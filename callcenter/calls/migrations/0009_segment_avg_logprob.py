from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('calls', '0008_call_vocabulary'),
    ]

    operations = [
        migrations.AddField(
            model_name='segment',
            name='avg_logprob',
            field=models.FloatField(blank=True, help_text="Whisper: the mean token log-prob of the text as the recognizer's search scored it (none: not known).", null=True),
        ),
        migrations.AddField(
            model_name='segment',
            name='scored_by',
            field=models.CharField(blank=True, help_text="The recognizer's weights and decoding settings the score is comparable under (its scoring key).", max_length=32),
        ),
    ]
