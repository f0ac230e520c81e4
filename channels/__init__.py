"""Built-in channel plugins: web chat, REST, Twilio SMS and WhatsApp, email."""
