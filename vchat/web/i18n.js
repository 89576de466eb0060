// The page's words: one dictionary per language, one t(key) for every string the page shows, and the
// country and language names (the browser's Intl.DisplayNames, so they need no dictionary).
//
// To add a language, add a dictionary to DICTIONARIES under its primary language subtag ("fr", "pt"), with
// every key of `en` (a missing key falls back to English), and its name in its own language under
// LANGUAGE_NAMES. Placeholders are {name}; t() fills them from its second argument.

const en = {
  "app.title": "vchat",
  "app.tagline": "Random video chat",
  "online.label": "Online:",

  "gate.title": "Adults only",
  "gate.text": "vchat connects you by video with strangers picked at random. You must be 18 or older to use it.",
  "gate.rules":
    "Be kind. Nudity, harassment, spam and anyone under 18 are reported to moderators and banned.",
  "gate.confirm": "I am 18 or older",

  "state.idle": "Press Start to meet someone.",
  "state.idle.connecting": "Connecting to the server…",
  "state.searching": "Looking for someone…",
  "state.connecting": "Connecting to your partner…",
  "state.connected": "Connected.",
  "state.reconnecting.partner": "Your partner's connection dropped. Waiting for them to come back…",
  "state.reconnecting.self": "Connection lost. Reconnecting…",
  "state.partner-left": "Your partner left. Looking for someone new…",
  "state.banned.until": "You are banned until {until}.",
  "state.banned.permanent": "You are banned permanently.",
  "state.banned.reason": "Reason: {reason}",
  "state.offline": "The server cannot be reached. Retrying…",
  "state.offline.elsewhere": "This chat went on in another window or tab. Reload the page to use it here.",

  "notice.kicked": "A moderator ended your session.",

  "camera.waiting": "Waiting for access to your camera and microphone…",
  "camera.denied":
    "Access to the camera and microphone was denied. Allow it in the browser's site settings and reload the page. Without it, your partner cannot see or hear you.",
  "camera.missing": "No camera or microphone was found. Without one, your partner cannot see or hear you.",
  "camera.busy": "The camera or microphone is in use by another application.",
  "camera.insecure": "The camera can only be used on a secure (https://) page.",
  "camera.unsupported": "This browser cannot use a camera.",
  "camera.failed": "The camera could not be started.",
  "camera.preview": "You",

  "button.start": "Start",
  "button.next": "Next",
  "button.stop": "Stop",
  "button.report": "Report",
  "button.send": "Send",

  "filters.title": "Who",
  "filters.gender": "I am",
  "gender.m": "a man",
  "gender.f": "a woman",
  "gender.u": "not saying",
  "filters.want": "I want to meet",
  "want.any": "anyone",
  "want.m": "men",
  "want.f": "women",
  "filters.countries": "Countries (optional)",
  "countries.placeholder": "e.g. DE, AT, CH",
  "countries.help": "ISO codes, separated by commas. Empty means anywhere.",
  "countries.add": "Add a country…",
  "countries.remove": "Remove {country}",
  "countries.anywhere": "Anywhere",
  "countries.ignored": "Ignored: {codes}",
  "countries.too-many": "At most {max} countries.",

  "partner.label": "Your partner",
  "partner.country-unknown": "country unknown",
  "partner.lang-unknown": "language not given",
  "partner.placeholder": "Your partner's video appears here.",

  "chat.title": "Chat",
  "chat.placeholder": "Type a message and press Enter",
  "chat.you": "You",
  "chat.partner": "Partner",
  "chat.typing": "Your partner is typing…",
  "chat.matched": "You are now talking to someone from {country}.",
  "chat.matched-unknown": "You are now talking to a stranger.",
  "chat.left": "Your partner left.",
  "chat.not-delivered": "Not delivered: {reason}",
  "chat.reason.partner_reconnecting": "your partner is reconnecting.",
  "chat.reason.rate_limited": "too many messages, slow down.",
  "chat.reason.too_long": "the message is too long.",
  "chat.reason.no_match": "the chat has ended.",
  "chat.reason.other": "the server refused it.",

  "report.title": "Report your partner",
  "report.reason": "Reason",
  "report.choose": "Choose a reason…",
  "report.reason.nudity": "Nudity or sexual content",
  "report.reason.harassment": "Harassment or insults",
  "report.reason.spam": "Spam or advertising",
  "report.reason.underage": "Under 18",
  "report.reason.chat_abuse": "Abuse in the chat",
  "report.reason.other": "Something else",
  "report.comment": "Comment (optional)",
  "report.snapshot": "This picture of your partner goes to the moderators with your report.",
  "report.no-snapshot": "No picture of your partner is available; the report is sent without one.",
  "report.send": "Send report",
  "report.cancel": "Cancel",
  "report.sending": "Sending the report…",
  "report.sent": "Thank you. Your report was sent to the moderators.",
  "report.too-late": "It is too late to report that partner.",
  "report.failed": "The report could not be sent. Please try again.",

  "gender.account": "as my account says: {gender}",
  "state.login-required": "This server needs a login. Log in with a button at the top to chat.",
  "state.account-deleted": "Your account was deleted. Reload the page to chat without one.",
  "account.area": "Account",
  "account.open": "My account",
  "account.login-with": "Log in with {provider}",
  "account.title": "Your account",
  "account.id": "Account number",
  "account.providers": "Logged in with",
  "account.gender": "Gender, from your login",
  "account.gender.none": "not given",
  "account.data": "Your data",
  "account.data.text":
    "We keep your account number, the logins linked to it, the gender and country they gave, and your settings. Never your e-mail address, your birth date or your chats.",
  "account.export": "Download my data",
  "account.logout": "Log out",
  "account.delete": "Delete my account",
  "account.delete.text":
    "Your account closes at once and your chat ends. What is linked to it is removed from our servers after {days} days; bans on it are kept.",
  "account.delete.understand": "I understand that this cannot be undone",
  "account.delete.confirm": "Delete my account for good",
  "account.close": "Close",
  "account.failed": "That did not work. Please try again.",
  "account.deleted": "Your account is deleted. What is linked to it is removed from our servers on {date}.",
  "settings.title": "Settings",
  "settings.lang": "Language of the page",
  "settings.lang.browser": "As my browser says",
  "settings.translate": "Translate the chat into",
  "settings.want": "Meet, by default",
  "settings.countries": "From these countries, by default",
  "settings.help": "Your settings follow your account to every device.",
  "settings.save": "Save",
  "settings.saving": "Saving…",
  "settings.saved": "Saved.",
  "login.error.state": "The login took too long or was started elsewhere. Please try again.",
  "login.error.cancelled": "The login was cancelled.",
  "login.error.provider": "The login service did not answer as it should. Please try again later.",
  "login.error.under_18": "vchat is for adults only, and your login says you are under 18.",
  "login.error.deleted": "This account was deleted at its owner's request and cannot be used again.",
  "login.error.other": "The login failed. Please try again.",

  "footer.language": "Language",
  "footer.privacy": "Video, sound and chat are never recorded.",
};

const de = {
  "app.title": "vchat",
  "app.tagline": "Zufälliger Videochat",
  "online.label": "Online:",

  "gate.title": "Nur für Erwachsene",
  "gate.text":
    "vchat verbindet dich per Video mit zufällig ausgewählten Fremden. Du musst mindestens 18 Jahre alt sein.",
  "gate.rules":
    "Sei freundlich. Nacktheit, Belästigung, Spam und Personen unter 18 werden den Moderatoren gemeldet und gesperrt.",
  "gate.confirm": "Ich bin 18 oder älter",

  "state.idle": "Drücke Start, um jemanden zu treffen.",
  "state.idle.connecting": "Verbindung zum Server wird aufgebaut…",
  "state.searching": "Suche nach jemandem…",
  "state.connecting": "Verbindung zu deinem Gegenüber wird aufgebaut…",
  "state.connected": "Verbunden.",
  "state.reconnecting.partner": "Die Verbindung deines Gegenübers ist abgerissen. Warte auf die Rückkehr…",
  "state.reconnecting.self": "Verbindung verloren. Verbinde neu…",
  "state.partner-left": "Dein Gegenüber ist gegangen. Suche nach jemand Neuem…",
  "state.banned.until": "Du bist gesperrt bis {until}.",
  "state.banned.permanent": "Du bist dauerhaft gesperrt.",
  "state.banned.reason": "Grund: {reason}",
  "state.offline": "Der Server ist nicht erreichbar. Neuer Versuch läuft…",
  "state.offline.elsewhere":
    "Dieser Chat geht in einem anderen Fenster oder Tab weiter. Lade die Seite neu, um ihn hier zu nutzen.",

  "notice.kicked": "Ein Moderator hat deine Sitzung beendet.",

  "camera.waiting": "Warte auf Zugriff auf Kamera und Mikrofon…",
  "camera.denied":
    "Der Zugriff auf Kamera und Mikrofon wurde verweigert. Erlaube ihn in den Website-Einstellungen des Browsers und lade die Seite neu. Ohne ihn kann dein Gegenüber dich weder sehen noch hören.",
  "camera.missing":
    "Keine Kamera und kein Mikrofon gefunden. Ohne sie kann dein Gegenüber dich weder sehen noch hören.",
  "camera.busy": "Kamera oder Mikrofon werden von einer anderen Anwendung benutzt.",
  "camera.insecure": "Die Kamera kann nur auf einer sicheren (https://) Seite benutzt werden.",
  "camera.unsupported": "Dieser Browser kann keine Kamera benutzen.",
  "camera.failed": "Die Kamera konnte nicht gestartet werden.",
  "camera.preview": "Du",

  "button.start": "Start",
  "button.next": "Weiter",
  "button.stop": "Stopp",
  "button.report": "Melden",
  "button.send": "Senden",

  "filters.title": "Wer",
  "filters.gender": "Ich bin",
  "gender.m": "ein Mann",
  "gender.f": "eine Frau",
  "gender.u": "keine Angabe",
  "filters.want": "Ich möchte treffen",
  "want.any": "alle",
  "want.m": "Männer",
  "want.f": "Frauen",
  "filters.countries": "Länder (optional)",
  "countries.placeholder": "z. B. DE, AT, CH",
  "countries.help": "ISO-Codes, durch Kommas getrennt. Leer heißt überall.",
  "countries.add": "Land hinzufügen…",
  "countries.remove": "{country} entfernen",
  "countries.anywhere": "Überall",
  "countries.ignored": "Ignoriert: {codes}",
  "countries.too-many": "Höchstens {max} Länder.",

  "partner.label": "Dein Gegenüber",
  "partner.country-unknown": "Land unbekannt",
  "partner.lang-unknown": "Sprache nicht angegeben",
  "partner.placeholder": "Hier erscheint das Video deines Gegenübers.",

  "chat.title": "Chat",
  "chat.placeholder": "Nachricht eingeben und Enter drücken",
  "chat.you": "Du",
  "chat.partner": "Gegenüber",
  "chat.typing": "Dein Gegenüber schreibt…",
  "chat.matched": "Du sprichst jetzt mit jemandem aus {country}.",
  "chat.matched-unknown": "Du sprichst jetzt mit einer fremden Person.",
  "chat.left": "Dein Gegenüber ist gegangen.",
  "chat.not-delivered": "Nicht zugestellt: {reason}",
  "chat.reason.partner_reconnecting": "dein Gegenüber verbindet sich neu.",
  "chat.reason.rate_limited": "zu viele Nachrichten, bitte langsamer.",
  "chat.reason.too_long": "die Nachricht ist zu lang.",
  "chat.reason.no_match": "der Chat ist beendet.",
  "chat.reason.other": "der Server hat sie abgelehnt.",

  "report.title": "Gegenüber melden",
  "report.reason": "Grund",
  "report.choose": "Grund auswählen…",
  "report.reason.nudity": "Nacktheit oder sexuelle Inhalte",
  "report.reason.harassment": "Belästigung oder Beleidigung",
  "report.reason.spam": "Spam oder Werbung",
  "report.reason.underage": "Unter 18",
  "report.reason.chat_abuse": "Missbrauch im Chat",
  "report.reason.other": "Etwas anderes",
  "report.comment": "Kommentar (optional)",
  "report.snapshot": "Dieses Bild deines Gegenübers geht mit deiner Meldung an die Moderatoren.",
  "report.no-snapshot": "Kein Bild deines Gegenübers verfügbar; die Meldung wird ohne Bild gesendet.",
  "report.send": "Meldung senden",
  "report.cancel": "Abbrechen",
  "report.sending": "Meldung wird gesendet…",
  "report.sent": "Danke. Deine Meldung wurde an die Moderatoren gesendet.",
  "report.too-late": "Für eine Meldung dieses Gegenübers ist es zu spät.",
  "report.failed": "Die Meldung konnte nicht gesendet werden. Bitte versuche es noch einmal.",

  "gender.account": "wie mein Konto sagt: {gender}",
  "state.login-required": "Dieser Server verlangt eine Anmeldung. Melde dich oben an, um zu chatten.",
  "state.account-deleted": "Dein Konto wurde gelöscht. Lade die Seite neu, um ohne Konto zu chatten.",
  "account.area": "Konto",
  "account.open": "Mein Konto",
  "account.login-with": "Mit {provider} anmelden",
  "account.title": "Dein Konto",
  "account.id": "Kontonummer",
  "account.providers": "Angemeldet mit",
  "account.gender": "Geschlecht, laut deiner Anmeldung",
  "account.gender.none": "nicht angegeben",
  "account.data": "Deine Daten",
  "account.data.text":
    "Wir speichern deine Kontonummer, die damit verknüpften Anmeldungen, das Geschlecht und Land, das sie angaben, und deine Einstellungen. Nie deine E-Mail-Adresse, dein Geburtsdatum oder deine Chats.",
  "account.export": "Meine Daten herunterladen",
  "account.logout": "Abmelden",
  "account.delete": "Mein Konto löschen",
  "account.delete.text":
    "Dein Konto wird sofort geschlossen und dein Chat endet. Was damit verknüpft ist, wird nach {days} Tagen von unseren Servern entfernt; Sperren darauf bleiben bestehen.",
  "account.delete.understand": "Ich verstehe, dass das nicht rückgängig gemacht werden kann",
  "account.delete.confirm": "Mein Konto endgültig löschen",
  "account.close": "Schließen",
  "account.failed": "Das hat nicht geklappt. Bitte versuche es noch einmal.",
  "account.deleted": "Dein Konto ist gelöscht. Was damit verknüpft ist, wird am {date} von unseren Servern entfernt.",
  "settings.title": "Einstellungen",
  "settings.lang": "Sprache der Seite",
  "settings.lang.browser": "Wie mein Browser",
  "settings.translate": "Den Chat übersetzen in",
  "settings.want": "Standardmäßig treffen",
  "settings.countries": "Standardmäßig aus diesen Ländern",
  "settings.help": "Deine Einstellungen folgen deinem Konto auf jedes Gerät.",
  "settings.save": "Speichern",
  "settings.saving": "Wird gespeichert…",
  "settings.saved": "Gespeichert.",
  "login.error.state":
    "Die Anmeldung hat zu lange gedauert oder wurde woanders begonnen. Bitte versuche es noch einmal.",
  "login.error.cancelled": "Die Anmeldung wurde abgebrochen.",
  "login.error.provider": "Der Anmeldedienst hat nicht wie erwartet geantwortet. Bitte versuche es später noch einmal.",
  "login.error.under_18": "vchat ist nur für Erwachsene, und laut deiner Anmeldung bist du unter 18.",
  "login.error.deleted": "Dieses Konto wurde auf Wunsch seines Inhabers gelöscht und kann nicht mehr benutzt werden.",
  "login.error.other": "Die Anmeldung ist fehlgeschlagen. Bitte versuche es noch einmal.",

  "footer.language": "Sprache",
  "footer.privacy": "Video, Ton und Chat werden nie aufgezeichnet.",
};

const ru = {
  "app.title": "vchat",
  "app.tagline": "Случайный видеочат",
  "online.label": "В сети:",

  "gate.title": "Только для взрослых",
  "gate.text": "vchat соединяет вас по видео со случайными незнакомцами. Вам должно быть не меньше 18 лет.",
  "gate.rules":
    "Будьте вежливы. О наготе, оскорблениях, спаме и пользователях младше 18 лет сообщают модераторам, за это блокируют.",
  "gate.confirm": "Мне 18 лет или больше",

  "state.idle": "Нажмите «Старт», чтобы найти собеседника.",
  "state.idle.connecting": "Подключение к серверу…",
  "state.searching": "Ищем собеседника…",
  "state.connecting": "Соединяемся с собеседником…",
  "state.connected": "Соединено.",
  "state.reconnecting.partner": "Связь с собеседником прервалась. Ждём, пока он вернётся…",
  "state.reconnecting.self": "Соединение потеряно. Переподключаемся…",
  "state.partner-left": "Собеседник ушёл. Ищем нового…",
  "state.banned.until": "Вы заблокированы до {until}.",
  "state.banned.permanent": "Вы заблокированы навсегда.",
  "state.banned.reason": "Причина: {reason}",
  "state.offline": "Сервер недоступен. Пробуем снова…",
  "state.offline.elsewhere":
    "Этот чат продолжился в другом окне или вкладке. Перезагрузите страницу, чтобы продолжить здесь.",

  "notice.kicked": "Модератор завершил ваш сеанс.",

  "camera.waiting": "Ждём доступа к камере и микрофону…",
  "camera.denied":
    "Доступ к камере и микрофону запрещён. Разрешите его в настройках сайта в браузере и перезагрузите страницу. Без него собеседник вас не увидит и не услышит.",
  "camera.missing": "Камера и микрофон не найдены. Без них собеседник вас не увидит и не услышит.",
  "camera.busy": "Камера или микрофон заняты другим приложением.",
  "camera.insecure": "Камера работает только на защищённой (https://) странице.",
  "camera.unsupported": "Этот браузер не умеет работать с камерой.",
  "camera.failed": "Не удалось включить камеру.",
  "camera.preview": "Вы",

  "button.start": "Старт",
  "button.next": "Дальше",
  "button.stop": "Стоп",
  "button.report": "Пожаловаться",
  "button.send": "Отправить",

  "filters.title": "Кто",
  "filters.gender": "Я",
  "gender.m": "мужчина",
  "gender.f": "женщина",
  "gender.u": "не скажу",
  "filters.want": "Хочу встретить",
  "want.any": "кого угодно",
  "want.m": "мужчин",
  "want.f": "женщин",
  "filters.countries": "Страны (необязательно)",
  "countries.placeholder": "например, RU, BY, KZ",
  "countries.help": "ISO-коды через запятую. Пусто — любая страна.",
  "countries.add": "Добавить страну…",
  "countries.remove": "Убрать: {country}",
  "countries.anywhere": "Любая страна",
  "countries.ignored": "Пропущено: {codes}",
  "countries.too-many": "Не больше {max} стран.",

  "partner.label": "Собеседник",
  "partner.country-unknown": "страна неизвестна",
  "partner.lang-unknown": "язык не указан",
  "partner.placeholder": "Здесь появится видео собеседника.",

  "chat.title": "Чат",
  "chat.placeholder": "Напишите сообщение и нажмите Enter",
  "chat.you": "Вы",
  "chat.partner": "Собеседник",
  "chat.typing": "Собеседник печатает…",
  "chat.matched": "Ваш собеседник из страны: {country}.",
  "chat.matched-unknown": "Вы разговариваете с незнакомцем.",
  "chat.left": "Собеседник ушёл.",
  "chat.not-delivered": "Не доставлено: {reason}",
  "chat.reason.partner_reconnecting": "собеседник переподключается.",
  "chat.reason.rate_limited": "слишком много сообщений, помедленнее.",
  "chat.reason.too_long": "сообщение слишком длинное.",
  "chat.reason.no_match": "чат закончился.",
  "chat.reason.other": "сервер его отклонил.",

  "report.title": "Пожаловаться на собеседника",
  "report.reason": "Причина",
  "report.choose": "Выберите причину…",
  "report.reason.nudity": "Нагота или сексуальный контент",
  "report.reason.harassment": "Оскорбления или преследование",
  "report.reason.spam": "Спам или реклама",
  "report.reason.underage": "Младше 18 лет",
  "report.reason.chat_abuse": "Оскорбления в чате",
  "report.reason.other": "Другое",
  "report.comment": "Комментарий (необязательно)",
  "report.snapshot": "Этот снимок собеседника будет отправлен модераторам вместе с жалобой.",
  "report.no-snapshot": "Снимка собеседника нет; жалоба будет отправлена без него.",
  "report.send": "Отправить жалобу",
  "report.cancel": "Отмена",
  "report.sending": "Отправляем жалобу…",
  "report.sent": "Спасибо. Жалоба отправлена модераторам.",
  "report.too-late": "Пожаловаться на этого собеседника уже поздно.",
  "report.failed": "Не удалось отправить жалобу. Попробуйте ещё раз.",

  "gender.account": "как в моём аккаунте: {gender}",
  "state.login-required": "Этот сервер требует входа. Войдите с помощью кнопки вверху, чтобы общаться.",
  "state.account-deleted": "Ваш аккаунт удалён. Перезагрузите страницу, чтобы общаться без него.",
  "account.area": "Аккаунт",
  "account.open": "Мой аккаунт",
  "account.login-with": "Войти через {provider}",
  "account.title": "Ваш аккаунт",
  "account.id": "Номер аккаунта",
  "account.providers": "Вход через",
  "account.gender": "Пол, по данным входа",
  "account.gender.none": "не указан",
  "account.data": "Ваши данные",
  "account.data.text":
    "Мы храним номер вашего аккаунта, связанные с ним входы, пол и страну, которые они сообщили, и ваши настройки. Никогда — ваш адрес электронной почты, дату рождения или переписку.",
  "account.export": "Скачать мои данные",
  "account.logout": "Выйти",
  "account.delete": "Удалить мой аккаунт",
  "account.delete.text":
    "Аккаунт закроется сразу, и ваш чат закончится. Всё, что с ним связано, будет удалено с наших серверов через {days} дн.; блокировки аккаунта сохраняются.",
  "account.delete.understand": "Я понимаю, что это нельзя отменить",
  "account.delete.confirm": "Удалить аккаунт навсегда",
  "account.close": "Закрыть",
  "account.failed": "Не получилось. Попробуйте ещё раз.",
  "account.deleted": "Ваш аккаунт удалён. Всё, что с ним связано, будет удалено с наших серверов {date}.",
  "settings.title": "Настройки",
  "settings.lang": "Язык страницы",
  "settings.lang.browser": "Как в браузере",
  "settings.translate": "Переводить чат на",
  "settings.want": "По умолчанию искать",
  "settings.countries": "По умолчанию из этих стран",
  "settings.help": "Настройки следуют за вашим аккаунтом на любое устройство.",
  "settings.save": "Сохранить",
  "settings.saving": "Сохранение…",
  "settings.saved": "Сохранено.",
  "login.error.state": "Вход занял слишком много времени или был начат в другом месте. Попробуйте ещё раз.",
  "login.error.cancelled": "Вход отменён.",
  "login.error.provider": "Сервис входа ответил не так, как ожидалось. Попробуйте позже.",
  "login.error.under_18": "vchat только для взрослых, а по данным входа вам нет 18 лет.",
  "login.error.deleted": "Этот аккаунт удалён по просьбе владельца и больше не может использоваться.",
  "login.error.other": "Войти не удалось. Попробуйте ещё раз.",

  "footer.language": "Язык",
  "footer.privacy": "Видео, звук и чат никогда не записываются.",
};

const es = {
  "app.title": "vchat",
  "app.tagline": "Videochat aleatorio",
  "online.label": "En línea:",

  "gate.title": "Solo para adultos",
  "gate.text": "vchat te conecta por vídeo con desconocidos elegidos al azar. Debes tener 18 años o más.",
  "gate.rules":
    "Sé amable. La desnudez, el acoso, el spam y los menores de 18 años se denuncian a los moderadores y se bloquean.",
  "gate.confirm": "Tengo 18 años o más",

  "state.idle": "Pulsa Empezar para conocer a alguien.",
  "state.idle.connecting": "Conectando con el servidor…",
  "state.searching": "Buscando a alguien…",
  "state.connecting": "Conectando con tu compañero…",
  "state.connected": "Conectado.",
  "state.reconnecting.partner": "Se cortó la conexión de tu compañero. Esperando a que vuelva…",
  "state.reconnecting.self": "Conexión perdida. Reconectando…",
  "state.partner-left": "Tu compañero se fue. Buscando a alguien nuevo…",
  "state.banned.until": "Estás bloqueado hasta {until}.",
  "state.banned.permanent": "Estás bloqueado de forma permanente.",
  "state.banned.reason": "Motivo: {reason}",
  "state.offline": "No se puede contactar con el servidor. Reintentando…",
  "state.offline.elsewhere":
    "Este chat continuó en otra ventana o pestaña. Recarga la página para usarlo aquí.",

  "notice.kicked": "Un moderador terminó tu sesión.",

  "camera.waiting": "Esperando acceso a la cámara y al micrófono…",
  "camera.denied":
    "Se denegó el acceso a la cámara y al micrófono. Permítelo en la configuración del sitio del navegador y recarga la página. Sin él, tu compañero no puede verte ni oírte.",
  "camera.missing":
    "No se encontró ninguna cámara ni micrófono. Sin ellos, tu compañero no puede verte ni oírte.",
  "camera.busy": "Otra aplicación está usando la cámara o el micrófono.",
  "camera.insecure": "La cámara solo funciona en una página segura (https://).",
  "camera.unsupported": "Este navegador no puede usar una cámara.",
  "camera.failed": "No se pudo iniciar la cámara.",
  "camera.preview": "Tú",

  "button.start": "Empezar",
  "button.next": "Siguiente",
  "button.stop": "Parar",
  "button.report": "Denunciar",
  "button.send": "Enviar",

  "filters.title": "Quién",
  "filters.gender": "Soy",
  "gender.m": "hombre",
  "gender.f": "mujer",
  "gender.u": "prefiero no decirlo",
  "filters.want": "Quiero conocer a",
  "want.any": "cualquiera",
  "want.m": "hombres",
  "want.f": "mujeres",
  "filters.countries": "Países (opcional)",
  "countries.placeholder": "p. ej. ES, MX, AR",
  "countries.help": "Códigos ISO separados por comas. Vacío significa cualquier lugar.",
  "countries.add": "Añadir un país…",
  "countries.remove": "Quitar {country}",
  "countries.anywhere": "Cualquier lugar",
  "countries.ignored": "Ignorado: {codes}",
  "countries.too-many": "Como máximo {max} países.",

  "partner.label": "Tu compañero",
  "partner.country-unknown": "país desconocido",
  "partner.lang-unknown": "idioma no indicado",
  "partner.placeholder": "Aquí aparece el vídeo de tu compañero.",

  "chat.title": "Chat",
  "chat.placeholder": "Escribe un mensaje y pulsa Intro",
  "chat.you": "Tú",
  "chat.partner": "Compañero",
  "chat.typing": "Tu compañero está escribiendo…",
  "chat.matched": "Ahora hablas con alguien de {country}.",
  "chat.matched-unknown": "Ahora hablas con un desconocido.",
  "chat.left": "Tu compañero se fue.",
  "chat.not-delivered": "No entregado: {reason}",
  "chat.reason.partner_reconnecting": "tu compañero se está reconectando.",
  "chat.reason.rate_limited": "demasiados mensajes, más despacio.",
  "chat.reason.too_long": "el mensaje es demasiado largo.",
  "chat.reason.no_match": "el chat ha terminado.",
  "chat.reason.other": "el servidor lo rechazó.",

  "report.title": "Denunciar a tu compañero",
  "report.reason": "Motivo",
  "report.choose": "Elige un motivo…",
  "report.reason.nudity": "Desnudez o contenido sexual",
  "report.reason.harassment": "Acoso o insultos",
  "report.reason.spam": "Spam o publicidad",
  "report.reason.underage": "Menor de 18 años",
  "report.reason.chat_abuse": "Abuso en el chat",
  "report.reason.other": "Otra cosa",
  "report.comment": "Comentario (opcional)",
  "report.snapshot": "Esta imagen de tu compañero se envía a los moderadores con tu denuncia.",
  "report.no-snapshot": "No hay imagen de tu compañero; la denuncia se envía sin ella.",
  "report.send": "Enviar denuncia",
  "report.cancel": "Cancelar",
  "report.sending": "Enviando la denuncia…",
  "report.sent": "Gracias. Tu denuncia se envió a los moderadores.",
  "report.too-late": "Ya es tarde para denunciar a ese compañero.",
  "report.failed": "No se pudo enviar la denuncia. Inténtalo de nuevo.",

  "gender.account": "como dice mi cuenta: {gender}",
  "state.login-required": "Este servidor pide iniciar sesión. Inicia sesión con un botón de arriba para chatear.",
  "state.account-deleted": "Tu cuenta se ha eliminado. Recarga la página para chatear sin cuenta.",
  "account.area": "Cuenta",
  "account.open": "Mi cuenta",
  "account.login-with": "Iniciar sesión con {provider}",
  "account.title": "Tu cuenta",
  "account.id": "Número de cuenta",
  "account.providers": "Sesión iniciada con",
  "account.gender": "Género, según tu inicio de sesión",
  "account.gender.none": "no indicado",
  "account.data": "Tus datos",
  "account.data.text":
    "Guardamos tu número de cuenta, los inicios de sesión vinculados, el género y el país que indicaron y tus ajustes. Nunca tu correo electrónico, tu fecha de nacimiento ni tus chats.",
  "account.export": "Descargar mis datos",
  "account.logout": "Cerrar sesión",
  "account.delete": "Eliminar mi cuenta",
  "account.delete.text":
    "Tu cuenta se cierra al momento y tu chat termina. Lo vinculado a ella se borra de nuestros servidores a los {days} días; los bloqueos sobre ella se conservan.",
  "account.delete.understand": "Entiendo que no se puede deshacer",
  "account.delete.confirm": "Eliminar mi cuenta para siempre",
  "account.close": "Cerrar",
  "account.failed": "No ha funcionado. Inténtalo de nuevo.",
  "account.deleted": "Tu cuenta está eliminada. Lo vinculado a ella se borra de nuestros servidores el {date}.",
  "settings.title": "Ajustes",
  "settings.lang": "Idioma de la página",
  "settings.lang.browser": "Como diga mi navegador",
  "settings.translate": "Traducir el chat al",
  "settings.want": "Conocer, por defecto",
  "settings.countries": "De estos países, por defecto",
  "settings.help": "Tus ajustes siguen a tu cuenta en cada dispositivo.",
  "settings.save": "Guardar",
  "settings.saving": "Guardando…",
  "settings.saved": "Guardado.",
  "login.error.state": "El inicio de sesión tardó demasiado o empezó en otro lugar. Inténtalo de nuevo.",
  "login.error.cancelled": "Se canceló el inicio de sesión.",
  "login.error.provider": "El servicio de inicio de sesión no respondió como debía. Inténtalo más tarde.",
  "login.error.under_18": "vchat es solo para adultos, y según tu inicio de sesión tienes menos de 18 años.",
  "login.error.deleted": "Esta cuenta se eliminó a petición de su titular y no se puede volver a usar.",
  "login.error.other": "No se pudo iniciar sesión. Inténtalo de nuevo.",

  "footer.language": "Idioma",
  "footer.privacy": "El vídeo, el sonido y el chat nunca se graban.",
};

/** Dictionaries by primary language subtag; `en` is complete and the fallback for any missing key. */
export const DICTIONARIES = Object.freeze({ en, de, ru, es });

/** Each language's name in itself, for the language picker. */
export const LANGUAGE_NAMES = Object.freeze({ en: "English", de: "Deutsch", ru: "Русский", es: "Español" });

let current = "en";

/** The language the page is shown in now (a key of DICTIONARIES). */
export function language() {
  return current;
}

/** The first of `candidates` (BCP 47 tags such as "de-AT") that has a dictionary, else English. */
export function pickLanguage(candidates) {
  for (const tag of candidates) {
    if (typeof tag !== "string") continue;
    const primary = tag.toLowerCase().split("-")[0];
    if (Object.hasOwn(DICTIONARIES, primary)) return primary;
  }
  return "en";
}

/** Show the page in `lang` from now on (and say so in <html lang>). */
export function setLanguage(lang) {
  current = Object.hasOwn(DICTIONARIES, lang) ? lang : "en";
  document.documentElement.lang = current;
  regionNames = displayNames("region");
  languageNames = displayNames("language");
}

/** The text for `key` in the current language, with {placeholders} filled from `values`. */
export function t(key, values = {}) {
  const text = DICTIONARIES[current][key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (Object.hasOwn(values, name) ? String(values[name]) : whole));
}

/**
 * Put the current language's words into the static markup under `root`: `data-i18n` sets the text,
 * `data-i18n-placeholder`, `data-i18n-title` and `data-i18n-aria-label` the attributes of those names.
 */
export function translatePage(root = document) {
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const attribute of ["placeholder", "title", "aria-label"]) {
    for (const element of root.querySelectorAll(`[data-i18n-${attribute}]`)) {
      element.setAttribute(attribute, t(element.getAttribute(`data-i18n-${attribute}`)));
    }
  }
}

function displayNames(type) {
  try {
    return new Intl.DisplayNames([current, "en"], { type, fallback: "none" });
  } catch {
    return null; // an old browser: codes are shown as they are
  }
}

let regionNames = displayNames("region");
let languageNames = displayNames("language");

/** A country's name in the page's language, from its ISO 3166 alpha-2 code (the code itself if unknown). */
export function countryName(code) {
  try {
    return regionNames?.of(code) ?? code;
  } catch {
    return code;
  }
}

/** A language's name in the page's language, from a BCP 47 tag (the tag itself if unknown). */
export function languageName(tag) {
  try {
    return languageNames?.of(tag) ?? tag;
  } catch {
    return tag;
  }
}

/** The flag of a country as two regional-indicator symbols ("DE" → 🇩🇪); empty for anything else. */
export function flag(code) {
  if (typeof code !== "string" || !/^[A-Za-z]{2}$/.test(code)) return "";
  return String.fromCodePoint(...[...code.toUpperCase()].map((c) => 0x1f1e6 + c.charCodeAt(0) - 65));
}

/** A point in time (seconds since the epoch) as a date and time in the page's language. */
export function dateTime(seconds) {
  return new Intl.DateTimeFormat(current, { dateStyle: "long", timeStyle: "short" }).format(
    new Date(seconds * 1000),
  );
}

/** A count in the page's language ("1,234" / "1.234"). */
export function count(number) {
  return new Intl.NumberFormat(current).format(number);
}
