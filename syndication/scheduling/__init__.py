"""When editions are due (``cadences``: crontabs in the site's time zone) and the process that runs the schedule."""
