"""The offline front door: archives (.eml, folders, mbox, Maildir, stdin) read as streams.
read.py: the formats; parallel.py: scanning in budgeted workers; output.py: records and
summary; replay.py + report.py: labelled metrics and the HTML page; tune.py: learned weights;
progress.py: the progress bar."""
