import django.db.models.deletion
import tasks.limits
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tasks', '0006_schedules'),
    ]

    operations = [
        migrations.AddField(
            model_name='queueconfig',
            name='fairness',
            field=models.CharField(choices=[('none', 'None: priority, then run time'), ('owner', 'Owner: round-robin across owners')], default='none', help_text='owner: each claim takes tasks from the owners with runnable tasks in turn.', max_length=8, verbose_name='fairness'),
        ),
        migrations.AddField(
            model_name='queueconfig',
            name='per_key_concurrency',
            field=models.PositiveIntegerField(default=0, help_text='Running tasks per concurrency key across all workers; 0 = no limit.', verbose_name='per-key concurrency'),
        ),
        migrations.AddField(
            model_name='queueconfig',
            name='rate_limit',
            field=models.CharField(blank=True, default='', help_text='Task starts across all workers, e.g. "100/s" or "600/m"; empty = no limit.', max_length=32, validators=[tasks.limits.validate_rate_limit], verbose_name='rate limit'),
        ),
        migrations.AddField(
            model_name='queueconfig',
            name='rate_limit_per_key',
            field=models.BooleanField(default=False, help_text='Apply the rate limit to each concurrency key on its own (tasks without a key share one).', verbose_name='rate limit per key'),
        ),
        migrations.AddConstraint(
            model_name='queueconfig',
            constraint=models.CheckConstraint(condition=models.Q(('fairness__in', ['none', 'owner'])), name='queue_config_fairness_valid'),
        ),
        migrations.AddField(
            model_name='taskqueue',
            name='concurrency_key',
            field=models.CharField(blank=True, max_length=200, null=True, verbose_name='concurrency key'),
        ),
        migrations.AddIndex(
            model_name='taskqueue',
            index=models.Index(fields=['status', 'queue', 'owner', '-priority', 'run_at'], name='task_fair_idx'),
        ),
        migrations.CreateModel(
            name='QueueRateBucket',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(blank=True, default='', max_length=200)),
                ('tokens', models.FloatField()),
                ('refilled_at', models.DateTimeField()),
                ('throttled', models.BigIntegerField(default=0)),
                ('queue', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tasks.queueconfig')),
            ],
            options={
                'db_table': 'queue_rate_bucket',
                'constraints': [models.UniqueConstraint(fields=('queue', 'key'), name='queue_rate_bucket_uniq')],
            },
        ),
    ]
