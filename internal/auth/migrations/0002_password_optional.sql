-- People imported from a member register get an account without a password:
-- they cannot sign in until an administrator (or an activation flow) sets one.
ALTER TABLE accounts ALTER COLUMN password_hash DROP NOT NULL;
