"""The mail system (seeds/mail-system.txt) on the log: Mailbox, Source, Exchange, MailManager."""
