"""What a person reads: the HTML report, the overview PNG and the evaluation figures."""
