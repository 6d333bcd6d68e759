"""The staff console: server-rendered HTML for window clerks, reviewers and approvers,
and the enterprises' public status page. It owns no schema and consumes no events: it
talks to intake, review and payout only through their HTTP APIs, with the user's token."""
