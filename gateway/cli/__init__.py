"""The `brandgate` command line: main.py builds the parser from one module per sub-command
(scan, filter, explain, replay, tune, serve, milter, quarantine); options.py: shared flags."""
