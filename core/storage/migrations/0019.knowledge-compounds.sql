-- Offline answers (#17): a hyphenated compound in a bot's documents (Wi-Fi, no-show, e-mail) is found by
-- the word written together (wifi, noshow, email). Hybrid search looks up the bot's hyphenated lexemes by
-- their joined form (core/knowledge/search.py, search_sql); this index serves that lookup.
CREATE INDEX knowledge_terms_compounds ON knowledge_terms (bot_id, (replace(lexeme, '-', '')))
    WHERE strpos(lexeme, '-') > 0;
