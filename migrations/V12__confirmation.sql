-- Where a callback's answer confirmation stands (domain::callback::Confirming): NULL when none was
-- asked, else asked, confirmed, not_confirmed or prompt_failed. Stored so that whichever process
-- follows the call knows that leg 2 may ring only after the courier pressed 1. Added, never
-- required: a process of the previous release writes no value and reads none.
ALTER TABLE callbacks ADD COLUMN confirmation text;
