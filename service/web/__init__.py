"""The service's own web pages: the consular console (/console/) and the citizen enrolment page
(/register). Static files that call the public API and nothing else."""
