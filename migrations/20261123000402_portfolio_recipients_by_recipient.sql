-- The sender reads, for each job, which portfolios messaged its recipient in the last 24 h:
-- by recipient, which the (portfolio, recipient_key) primary key cannot serve.
CREATE INDEX portfolio_recipients_recipient ON portfolio_recipients (recipient_key, last_at);
