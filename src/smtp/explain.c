/*
 * explain.c - what an SMTP reply means, from the catalogue (see explain.h).
 *
 * The per-code texts come from codes.def, esc.def and reply.def.  What lives
 * here is only what those tables cannot say about a single row: how to find
 * a code in a pasted log line, who must act on a code, what tern's delivery
 * client does when it receives one, the sentences of a comparison, and the
 * French for the fixed headings, class names and tern's own behaviour (plus,
 * for the codes people meet most, the French of codes.def's texts).
 *
 * Output is for people first: paragraphs wrapped at 78 columns under the
 * headings of the page this feature grew from (Description / When you see
 * it / How to resolve / Key differences / When to use which).
 */
#include "smtp/explain.h"

#include <ctype.h>
#include <stdarg.h>
#include <string.h>

/* ---- the tables ------------------------------------------------------------ */

const struct explain_code explain_codes[] = {
#define CODE(number, name, meaning, when, resolve, send)                                           \
    {number, name, meaning, when, resolve, send},
#include "smtp/codes.def"
#undef CODE
};
const size_t explain_ncodes = sizeof(explain_codes) / sizeof(explain_codes[0]);

const struct explain_esc explain_escs[] = {
#define ESC(subject, detail, title, description, reference)                                        \
    {subject, detail, title, description, reference},
#include "smtp/esc.def"
#undef ESC
};
const size_t explain_nescs = sizeof(explain_escs) / sizeof(explain_escs[0]);

const char *const explain_subjects[EXPLAIN_NSUBJECTS] = {
#define ESC_SUBJECT(subject, title) [subject] = title,
#include "smtp/esc.def"
#undef ESC_SUBJECT
};

/*
 * French texts of codes.def for the codes met most often in bounces and logs.
 * Same columns as codes.def; a code absent here is shown in English.
 */
static const struct explain_code explain_codes_fr[] = {
    {421, "Service non disponible",
        "Transitoire : le serveur ne peut pas servir maintenant et ferme le canal. Le client garde "
        "le message et réessaie plus tard (d'abord un autre MX) ; toute transaction inachevée "
        "est annulée.",
        "Comme message d'accueil quand le serveur est surchargé, limite le nombre de connexions "
        "ou s'arrête ; en cours de session après un délai d'inactivité, trop d'erreurs ou un "
        "arrêt.",
        "Expéditeur : rien, votre serveur réessaie. Administrateur du destinataire, si cela "
        "dure : vérifier la charge, les limites de connexions, les délais et un éventuel "
        "redémarrage du service.",
        "Quand vous fermez la connexion pour une cause temporaire : surcharge, limite par "
        "adresse IP, délai dépassé, arrêt. Peut répondre à n'importe quelle commande. Pour un "
        "problème temporaire d'une commande ou d'un destinataire qui garde la session, utilisez "
        "450/451/452."},
    {450, "Boîte aux lettres indisponible (temporaire)",
        "Transitoire : l'action sur cette boîte n'a pas été faite maintenant (occupée, "
        "verrouillée ou bloquée un temps par une règle comme le greylisting). Le client "
        "réessaie plus tard.",
        "En réponse à RCPT TO (ou après DATA pour une règle) pendant un greylisting, une "
        "limite de débit par expéditeur ou destinataire, ou quand la boîte est verrouillée.",
        "Expéditeur : rien, votre serveur réessaie ; le greylisting se lève en quelques "
        "minutes. Si cela dure des jours, contactez le postmaster du destinataire.",
        "Quand une boîte ne peut pas prendre le message maintenant mais le pourra plus tard : "
        "greylisting, blocage temporaire, boîte verrouillée. Panne côté serveur : 451 ; manque "
        "de place : 452 ; si cela ne marchera jamais : 550."},
    {451, "Erreur locale de traitement",
        "Transitoire : le serveur a eu un problème à lui (pas la faute du client) et a "
        "abandonné l'action. Le client garde le message et réessaie.",
        "En réponse à MAIL, RCPT ou après les données, quand le disque, la base de données, le "
        "DNS ou un filtre du serveur a échoué, ou qu'une consultation de règle a expiré.",
        "Expéditeur : rien, votre serveur réessaie. Administrateur du destinataire : lire le "
        "journal du serveur à cette heure ; vérifier stockage, bases, DNS et filtres.",
        "Pour les pannes internes qui devraient passer d'elles-mêmes : erreurs d'E/S, "
        "consultations échouées ou expirées, plantage d'un auxiliaire. Pas pour un disque plein "
        "(452) ni pour une décision de règle sur une boîte (450)."},
    {452, "Stockage système insuffisant",
        "Transitoire : le serveur manque de place pour cela maintenant ; après RCPT, cela veut "
        "aussi dire trop de destinataires pour cette transaction. Le client garde le message et "
        "réessaie.",
        "En réponse à MAIL ou après les données quand le disque du serveur est plein ; en "
        "réponse à RCPT quand la limite de destinataires par message est atteinte.",
        "Expéditeur : rien ; un client conforme envoie les destinataires restants dans une "
        "autre transaction. Administrateur du destinataire : libérer de l'espace disque ou "
        "relever la limite de destinataires.",
        "Quand tout le système manque de place, et (RFC 5321 4.5.3.1.10) pour refuser les "
        "destinataires au-delà de votre limite par transaction. Pour une seule boîte pleine, "
        "452 ou 552 avec X.2.2 ; pour un message trop gros, 552."},
    {500, "Erreur de syntaxe, commande non reconnue",
        "Permanente : le serveur n'a pas du tout reconnu la ligne de commande (verbe inconnu, "
        "ligne trop longue ou mal formée).",
        "Après une faute de frappe, un verbe non pris en charge, des octets binaires, une ligne "
        "au-delà de la limite, de mauvaises fins de ligne, ou un autre protocole parlé sur le "
        "port SMTP.",
        "Auteur du client : n'envoyer que les commandes de la RFC 5321 et les extensions "
        "annoncées, terminer les lignes par CRLF, rester sous 512 octets.",
        "Quand la commande elle-même est inconnue ou la ligne inutilisable. Verbe connu mais non "
        "implémenté : 502 ; verbe correct mais arguments faux : 501."},
    {501, "Erreur de syntaxe dans les paramètres ou arguments",
        "Permanente : la commande a été reconnue, mais ses arguments sont mal formés, donc elle "
        "n'a pas été exécutée. Corrigez la commande ; la répéter telle quelle échouera encore.",
        "Sur MAIL FROM ou RCPT TO avec une adresse mal formée ou sans chevrons, sur HELO/EHLO "
        "avec un nom d'hôte invalide, sur des commandes qui ne prennent pas d'argument.",
        "Client : corriger l'argument que le texte désigne, par exemple "
        "MAIL FROM:<user@example.com> avec chevrons et sans espace parasite ; utiliser un nom "
        "de domaine complet valide dans EHLO.",
        "Quand le verbe est valide mais que son argument enfreint la grammaire. Verbe inconnu : "
        "500. Mot-clé de paramètre connu avec une mauvaise valeur : 501. Paramètre MAIL/RCPT "
        "inconnu ou non pris en charge : 555. Adresse syntaxiquement correcte mais refusée : "
        "553."},
    {502, "Commande non implémentée",
        "Permanente : le serveur connaît la commande mais ne l'implémente pas (RFC 5321 4.2.4).",
        "Pour des commandes optionnelles comme EXPN, TURN, ETRN, ou VRFY quand il est désactivé, "
        "et pour les extensions non proposées par ce serveur.",
        "Client : ne pas envoyer de commande absente de la réponse à EHLO ; continuer sans "
        "elle.",
        "Pour les commandes que vous reconnaissez sans les prendre en charge. Commande inconnue "
        ": 500. N'annoncez jamais dans EHLO une extension dont vous répondez 502 à la "
        "commande."},
    {503, "Mauvaise séquence de commandes",
        "Permanente pour cette commande : elle est valide mais arrive dans le mauvais ordre pour "
        "l'état de la session.",
        "MAIL avant EHLO/HELO, RCPT ou DATA avant MAIL, DATA sans destinataire accepté, un "
        "second MAIL dans une transaction, AUTH une fois déjà authentifié, DATA après BDAT.",
        "Auteur du client : suivre la séquence EHLO, MAIL, RCPT..., DATA ; vérifier chaque "
        "réponse avant de continuer (surtout en pipelining) et envoyer RSET après une erreur.",
        "Quand la commande est correcte mais que l'état l'interdit. Syntaxe cassée : 500/501 ; "
        "un destinataire manquant à DATA peut aussi donner 554 No valid recipients."},
    {550, "Boîte aux lettres indisponible",
        "Permanente : l'action a été refusée pour cette boîte : elle n'existe pas, l'accès est "
        "refusé, ou une règle rejette la commande. Le client renvoie le message en erreur pour "
        "ce destinataire.",
        "En réponse à RCPT TO pour un utilisateur inconnu (X.1.1) ou un relais refusé (X.7.1) ; "
        "après DATA pour un rejet du contenu ou d'une règle (spam, contrôles "
        "d'authentification).",
        "Expéditeur : vérifier l'adresse (fautes de frappe) ; si elle est juste, l'administrateur "
        "du destinataire refuse votre courrier : lire le texte et le code étendu, et contacter "
        "son postmaster.",
        "Pour les refus permanents dus à une règle ou à une boîte inexistante (la RFC 5321 "
        "recommande 550 pour le refus de relais). 553 pour une syntaxe d'adresse refusée, 552 "
        "pour la taille, 554 pour l'échec d'une transaction entière, 450 si ce n'est que "
        "temporaire."},
    {552, "Allocation de stockage dépassée",
        "Permanente : l'action a été abandonnée à cause d'une limite de taille : le message est "
        "plus gros que permis, ou (historiquement) la boîte dépasse son quota.",
        "À MAIL FROM avec un SIZE déclaré au-dessus de la limite, après les données quand le "
        "message est trop gros, à RCPT quand une boîte est pleine.",
        "Expéditeur : envoyer un message plus petit (compresser, mettre un lien pour les gros "
        "fichiers). Administrateur du destinataire : relever la limite de taille ou le quota si "
        "c'est justifié.",
        "Pour un message au-dessus de la limite de taille fixée (X.3.4, ou X.2.3 par boîte). La "
        "RFC 5321 permet de traiter 552 à RCPT comme temporaire ; pour une boîte pleine, "
        "452/450 avec X.2.2 dit clairement que c'est transitoire."},
    {553, "Nom de boîte aux lettres non autorisé",
        "Permanente : l'adresse donnée n'est pas acceptable : sa syntaxe est invalide pour ce "
        "serveur, ou elle n'est pas permise (par exemple non ASCII sans SMTPUTF8).",
        "En réponse à MAIL FROM ou RCPT TO avec une adresse de syntaxe mauvaise ou refusée, ou "
        "une adresse UTF-8 sans SMTPUTF8 (X.6.7).",
        "Expéditeur : corriger l'adresse. Auteur du client : déclarer SMTPUTF8 pour les "
        "adresses internationalisées quand le serveur le prend en charge.",
        "Quand l'adresse elle-même est refusée comme nom : syntaxe mauvaise ou interdite, "
        "caractères interdits, non ASCII sans SMTPUTF8. Une commande mal formée : 501 ; un "
        "utilisateur inconnu à la syntaxe correcte : 550."},
    {554, "Échec de la transaction",
        "Permanente : la transaction dans son ensemble a échoué (souvent après les données du "
        "message) ; comme message d'accueil, cela veut dire pas de service SMTP pour ce client.",
        "Comme accueil de serveurs qui bloquent l'IP du client ; après les données pour un "
        "contenu refusé (spam, virus, message mal formé) ; en réponse à DATA sans destinataire "
        "valide.",
        "Expéditeur : lire le texte et le code étendu (liste de blocage, contenu, "
        "authentification). Vérifier la réputation de votre IP, SPF/DKIM/DMARC et le format du "
        "message, puis contacter le postmaster.",
        "Pour l'échec d'un message entier après DATA et comme accueil de refus. Pour les refus "
        "de règle par destinataire à RCPT, la RFC 5321 recommande 550 ; pour la taille, 552."},
};

/* ---- fixed texts, English and French ----------------------------------------- */

enum explain_text {
    T_DESCRIPTION,
    T_WHEN,
    T_RESOLVE,
    T_DIFFERENCES,
    T_WHICH,
    T_SEND,
    T_RECEIVE,
    T_TERN_SENDS,
    T_ENHANCED,
    T_CLASS,
    T_TEXT,
    T_REFERENCE,
    T_SUBJECT,
    T_DETAIL,
    T_NEVER_SENT,
    T_RELATED,
    T_OUTCOME,
    T_UNREGISTERED,
    T_MISMATCH,
    T_WHO,
    T_ANY_CLASS,
    T_VS,
    T_WHILE,
    T_BOTH,
    T_REPLY_WORD,
    T_CLASS_DIFF,
    T_CLASS_SAME,
    T_WHO_DIFF,
    T_RETRY_DIFF,
    T_CONN_DIFF,
    T_SUBJECT_SAME,
    T_SUBJECT_DIFF,
    T_SUBJECT_ONE,
    T__COUNT
};

static const char *const explain_texts[T__COUNT][2] = {
    [T_DESCRIPTION] = {"Description", "Description"},
    [T_WHEN] = {"When you see it", "Quand vous le voyez"},
    [T_RESOLVE] = {"How to resolve", "Comment résoudre"},
    [T_DIFFERENCES] = {"Key differences", "Différences clés"},
    [T_WHICH] = {"When to use which", "Quand utiliser lequel"},
    [T_SEND] = {"When to send it", "Quand l'envoyer"},
    [T_RECEIVE] = {"What tern does when it receives it", "Ce que fait tern quand il le reçoit"},
    [T_TERN_SENDS] = {"When tern sends it", "Quand tern l'envoie"},
    [T_ENHANCED] = {"Enhanced status code", "Code d'état étendu"},
    [T_CLASS] = {"Class", "Classe"},
    [T_TEXT] = {"Text", "Texte"},
    [T_REFERENCE] = {"Reference", "Référence"},
    [T_SUBJECT] = {"subject", "sujet"},
    [T_DETAIL] = {"detail", "détail"},
    [T_NEVER_SENT] = {"tern never sends %s.", "tern n'envoie jamais %s."},
    [T_RELATED] = {"tern never sends %s itself; with another class it sends:",
        "tern n'envoie jamais %s lui-même ; avec une autre classe, il envoie :"},
    [T_OUTCOME] = {"delivery outcome, not sent to a client",
        "résultat de livraison, non envoyé à un client"},
    [T_UNREGISTERED] = {"%s is not in the registry of enhanced status codes; only its class "
                        "and subject are known.",
        "%s n'est pas dans le registre des codes d'état étendus ; seuls sa classe et son sujet "
        "sont connus."},
    [T_MISMATCH] = {"Warning: the enhanced code's class (%d) does not match the reply code's "
                    "(%d). RFC 3463 requires them to agree; clients go by the reply code.",
        "Attention : la classe du code étendu (%d) ne correspond pas à celle du code de réponse "
        "(%d). La RFC 3463 exige qu'elles concordent ; les clients suivent le code de "
        "réponse."},
    [T_WHO] = {"Who must act", "Qui doit agir"},
    [T_ANY_CLASS] = {"any class (X stands for 2, 4 or 5)", "toute classe (X vaut 2, 4 ou 5)"},
    [T_VS] = {"vs", "vs"},
    [T_WHILE] = {"%s (%s) is a %s %s reply, while %s (%s) is a %s %s reply.",
        "%s (%s) est une réponse %s %s, alors que %s (%s) est une réponse %s %s."},
    [T_BOTH] = {"%s (%s) and %s (%s) are both %s %s replies.",
        "%s (%s) et %s (%s) sont toutes deux des réponses %s %s."},
    [T_REPLY_WORD] = {"reply", "réponse"},
    [T_CLASS_DIFF] = {"Class: %s is %s (%s), %s is %s (%s).",
        "Classe : %s est une réponse %s (%s), %s une réponse %s (%s)."},
    [T_CLASS_SAME] = {"Class: %s and %s are both %s (%s).",
        "Classe : %s et %s sont toutes deux des réponses %s (%s)."},
    [T_WHO_DIFF] = {"Who must act: %s: %s. %s: %s.", "Qui doit agir : %s : %s. %s : %s."},
    [T_RETRY_DIFF] = {"Retry: %s: %s %s: %s", "Réessayer : %s : %s %s : %s"},
    [T_CONN_DIFF] = {"Connection: %s: %s %s: %s", "Connexion : %s : %s %s : %s"},
    [T_SUBJECT_SAME] = {"Subject: both enhanced codes are about %s (%s; %s).",
        "Sujet : les deux codes étendus portent sur %s (%s ; %s)."},
    [T_SUBJECT_DIFF] = {"Subject: %s is about %s (%s); %s is about %s (%s).",
        "Sujet : %s porte sur %s (%s) ; %s porte sur %s (%s)."},
    [T_SUBJECT_ONE] = {"Subject: only %s carries an enhanced code: %s, %s (%s).",
        "Sujet : seul %s porte un code étendu : %s, %s (%s)."},
};

static const char *
tx(enum explain_text t, enum explain_lang lang)
{
    return explain_texts[t][lang == EXPLAIN_FR ? 1 : 0];
}

const char *
explain_class_name(int digit, enum explain_lang lang)
{
    bool fr = lang == EXPLAIN_FR;

    switch (digit) {
    case 2:
        return fr ? "positive définitive" : "positive completion";
    case 3:
        return fr ? "positive intermédiaire" : "positive intermediate";
    case 4:
        return fr ? "négative transitoire" : "transient negative";
    case 5:
        return fr ? "négative permanente" : "permanent negative";
    }
    return fr ? "inconnue" : "unknown";
}

/* RFC 3463 §3.1 names the classes of enhanced codes differently. */
static const char *
esc_class_name(int digit, enum explain_lang lang)
{
    bool fr = lang == EXPLAIN_FR;

    switch (digit) {
    case 2:
        return fr ? "succès" : "success";
    case 4:
        return fr ? "échec transitoire persistant" : "persistent transient failure";
    case 5:
        return fr ? "échec permanent" : "permanent failure";
    }
    return tx(T_ANY_CLASS, lang);
}

/* ---- who acts, retry, connection: what a row of codes.def does not say --------- */

struct explain_actor_row {
    unsigned short code;
    const char *en, *fr;
};

static const struct explain_actor_row explain_actors[] = {
    {221, "nobody: the session ended normally", "personne : la session s'est terminée normalement"},
    {251, "nobody; the sender may update the address",
        "personne ; l'expéditeur peut mettre l'adresse à jour"},
    {421,
        "nobody at first (the sending server retries by itself); the receiving server's operator "
        "if it persists",
        "personne d'abord (le serveur d'envoi réessaie de lui-même) ; l'administrateur du serveur "
        "destinataire si cela dure"},
    {432, "the user, who must authenticate once with PLAIN over TLS",
        "l'utilisateur, qui doit s'authentifier une fois avec PLAIN sous TLS"},
    {450,
        "nobody at first (the sending server retries by itself); the recipient's postmaster if it "
        "lasts days",
        "personne d'abord (le serveur d'envoi réessaie de lui-même) ; le postmaster du "
        "destinataire si cela dure des jours"},
    {451, "the receiving server's operator; the sending server retries meanwhile",
        "l'administrateur du serveur destinataire ; le serveur d'envoi réessaie entre-temps"},
    {452,
        "the receiving server's operator (storage), or for too many recipients the client "
        "software, which sends the rest later",
        "l'administrateur du serveur destinataire (stockage), ou pour trop de destinataires le "
        "logiciel client, qui envoie le reste plus tard"},
    {454,
        "the receiving server's operator (authentication backend, TLS setup); the user retries "
        "later",
        "l'administrateur du serveur destinataire (base d'authentification, TLS) ; l'utilisateur "
        "réessaie plus tard"},
    {455, "the client software: retry later, or without the parameter",
        "le logiciel client : réessayer plus tard, ou sans le paramètre"},
    {500, "the client software (its author): the command must change",
        "le logiciel client (son auteur) : la commande doit changer"},
    {501, "the client software (its author): the command's arguments must change",
        "le logiciel client (son auteur) : les arguments de la commande doivent changer"},
    {502, "the client software (its author): it must do without this command",
        "le logiciel client (son auteur) : il doit se passer de cette commande"},
    {503, "the client software (its author): it must follow the command sequence",
        "le logiciel client (son auteur) : il doit suivre la séquence des commandes"},
    {504, "the client software: it must pick an option the server offers",
        "le logiciel client : il doit choisir une option proposée par le serveur"},
    {521, "the sender (check the recipient domain) and the domain's owner (its MX records)",
        "l'expéditeur (vérifier le domaine du destinataire) et le propriétaire du domaine (ses "
        "MX)"},
    {530, "the user or the mail client's configuration: authenticate, or start TLS",
        "l'utilisateur ou la configuration du client de messagerie : s'authentifier, ou démarrer "
        "TLS"},
    {534, "the user or the mail client's configuration: a stronger mechanism",
        "l'utilisateur ou la configuration du client de messagerie : un mécanisme plus fort"},
    {535, "the user: the credentials are wrong", "l'utilisateur : les identifiants sont faux"},
    {538, "the mail client's configuration: start TLS before AUTH",
        "la configuration du client de messagerie : démarrer TLS avant AUTH"},
    {550,
        "the sender (check the address) or, for a policy refusal, the sender's and the recipient's "
        "administrators",
        "l'expéditeur (vérifier l'adresse) ou, pour un refus de règle, les administrateurs de "
        "l'expéditeur et du destinataire"},
    {551, "the sender, who must use the new address",
        "l'expéditeur, qui doit utiliser la nouvelle adresse"},
    {552, "the sender (a smaller message) or the recipient's operator (the size limit)",
        "l'expéditeur (un message plus petit) ou l'administrateur du destinataire (la limite de "
        "taille)"},
    {553, "the sender or the client software: the address must be corrected",
        "l'expéditeur ou le logiciel client : l'adresse doit être corrigée"},
    {554, "the sender and their administrator: reputation, authentication or content",
        "l'expéditeur et son administrateur : réputation, authentification ou contenu"},
    {555, "the client software (its author): only advertised parameters",
        "le logiciel client (son auteur) : seulement les paramètres annoncés"},
    {556, "the sender: the address cannot receive mail",
        "l'expéditeur : l'adresse ne peut pas recevoir de courrier"},
};

const char *
explain_actor(unsigned code, enum explain_lang lang)
{
    bool fr = lang == EXPLAIN_FR;
    size_t i;

    for (i = 0; i < sizeof(explain_actors) / sizeof(explain_actors[0]); i++)
        if (explain_actors[i].code == code)
            return fr ? explain_actors[i].fr : explain_actors[i].en;
    switch (code / 100) {
    case 2:
        return fr ? "personne : la commande a réussi" : "nobody: the command succeeded";
    case 3:
        return fr ? "le logiciel client, qui poursuit l'échange"
                  : "the client software, which goes on with the exchange";
    }
    return NULL;
}

static const char *
retry_text(const struct explain_result *r, enum explain_lang lang)
{
    bool fr = lang == EXPLAIN_FR;
    int cls = r->basic ? (int)r->code / 100 : r->esc_class;

    if (r->code == 421)
        return fr ? "oui, plus tard ; le serveur d'envoi réessaie de lui-même, d'abord un autre MX."
                  : "yes, later; the sending server retries by itself, another MX first.";
    if (r->code == 452)
        return fr ? "oui ; plus tard, ou tout de suite dans une nouvelle transaction pour les "
                    "destinataires en trop."
                  : "yes; later, or at once in a new transaction for recipients over the limit.";
    switch (cls) {
    case 2:
    case 3:
        return fr ? "inutile, la commande a réussi." : "not needed; the command succeeded.";
    case 4:
        return fr ? "oui, plus tard ; le serveur d'envoi réessaie de lui-même."
                  : "yes, later; the sending server retries by itself.";
    case 5:
        return fr ? "non ; la même commande échouerait encore : il faut d'abord changer quelque "
                    "chose."
                  : "no; the same command would fail again: something must change first.";
    }
    return fr ? "selon la classe." : "depends on the class.";
}

static const char *
connection_text(const struct explain_result *r, enum explain_lang lang)
{
    bool fr = lang == EXPLAIN_FR;

    if (r->basic == NULL)
        return fr ? "un code étendu seul ne le dit pas." : "an enhanced code alone does not say.";
    switch (r->code) {
    case 221:
        return fr ? "le serveur ferme la connexion (fin normale, après QUIT)."
                  : "the server closes the connection (the normal end, after QUIT).";
    case 421:
        return fr ? "le serveur ferme la connexion ; la transaction en cours est annulée."
                  : "the server closes the connection; a transaction in progress is void.";
    case 521:
        return fr ? "c'est un accueil : l'hôte n'accepte pas de courrier et ferme la connexion."
                  : "it is a greeting: the host accepts no mail and closes the connection.";
    case 554:
        return fr ? "la session continue, sauf en accueil : alors aucun courrier ne passe sur "
                    "cette connexion (le serveur répond 503 à tout sauf QUIT)."
                  : "the session goes on, except as a greeting: then no mail can pass on this "
                    "connection (the server answers 503 to all but QUIT).";
    }
    return fr ? "la session reste ouverte ; le client peut envoyer d'autres commandes."
              : "the session stays open; the client may send further commands.";
}

/* What tern's delivery client does on receiving a reply (docs/design.md, "path of one message"). */
static const char *const receive_texts[][2] = {
#define RECV_2 0
    {"Nothing to undo: the step succeeded and tern goes on with the session. A 250 after the "
     "message data (or the last BDAT) means the next server took responsibility: tern marks each "
     "recipient it accepted as delivered, and the message leaves the queue once no recipient is "
     "pending.",
        "Rien à défaire : l'étape a réussi et tern poursuit la session. Un 250 après les données "
        "du message (ou le dernier BDAT) veut dire que le serveur suivant en a pris la "
        "responsabilité : tern marque chaque destinataire accepté comme livré, et le message "
        "quitte la file quand plus aucun destinataire n'est en attente."},
#define RECV_3 1
    {"tern goes on: after 354 it sends the message data, ended by CRLF.CRLF, and waits for the "
     "final reply; after 334 it sends the next AUTH response.",
        "tern continue : après 354 il envoie les données du message, terminées par CRLF.CRLF, et "
        "attend la réponse finale ; après 334 il envoie la réponse AUTH suivante."},
#define RECV_4 2
    {"tern keeps the message in its queue and retries later with exponential backoff (min_backoff "
     "up to max_backoff), recording this reply as the recipient's last error (see tern queue). If "
     "the recipient is still deferred after max_queue_lifetime, tern gives up and sends a DSN "
     "(bounce) to the sender.",
        "tern garde le message dans sa file et réessaie plus tard avec un délai croissant (de "
        "min_backoff à max_backoff), en notant cette réponse comme dernière erreur du destinataire "
        "(voir tern queue). Si le destinataire est toujours en attente après max_queue_lifetime, "
        "tern abandonne et envoie un avis de non-remise (DSN) à l'expéditeur."},
#define RECV_421 3
    {"tern closes the connection and defers every recipient not yet confirmed by a 250 after the "
     "message data. It keeps the message and retries with backoff, trying the next MX first; after "
     "max_queue_lifetime it bounces.",
        "tern ferme la connexion et met en attente chaque destinataire pas encore confirmé par un "
        "250 après les données. Il garde le message et réessaie avec un délai croissant, en "
        "essayant d'abord le MX suivant ; après max_queue_lifetime, il renvoie un avis de "
        "non-remise."},
#define RECV_45X 4
    {"tern defers only what the reply refused: one recipient (at RCPT) or the whole transaction "
     "(at MAIL or after the data). It keeps the message and retries with backoff (min_backoff up "
     "to max_backoff), and bounces after max_queue_lifetime. After 452 at RCPT (too many "
     "recipients) the recipients over the limit go in another transaction.",
        "tern ne met en attente que ce que la réponse a refusé : un destinataire (à RCPT) ou toute "
        "la transaction (à MAIL ou après les données). Il garde le message et réessaie avec un "
        "délai croissant (de min_backoff à max_backoff), puis renvoie un avis de non-remise après "
        "max_queue_lifetime. Après 452 à RCPT (trop de destinataires), ceux au-delà de la limite "
        "partent dans une autre transaction."},
#define RECV_5 5
    {"tern gives up and does not retry: each recipient the reply refused is marked failed, and "
     "tern sends a DSN (bounce) to the sender quoting this reply (never a bounce for a bounce).",
        "tern abandonne et ne réessaie pas : chaque destinataire refusé est marqué en échec, et "
        "tern envoie à l'expéditeur un avis de non-remise (DSN) citant cette réponse (jamais "
        "d'avis pour un avis)."},
#define RECV_55X 6
    {"tern gives up for the recipients concerned and does not retry: at RCPT only that recipient "
     "fails; at MAIL or after the message data, every recipient of the transaction. The sender "
     "gets a DSN (bounce) quoting this reply (never a bounce for a bounce).",
        "tern abandonne pour les destinataires concernés et ne réessaie pas : à RCPT, seul ce "
        "destinataire échoue ; à MAIL ou après les données, tous les destinataires de la "
        "transaction. L'expéditeur reçoit un avis de non-remise (DSN) citant cette réponse (jamais "
        "d'avis pour un avis)."},
#define RECV_GREETING5 7
    {"As a greeting, tern sends QUIT and tries the next MX; only if no MX accepts do the "
     "recipients fail, with a DSN (bounce) to the sender. After a command, tern gives up for the "
     "recipients concerned, as for any 5xx, and does not retry.",
        "En accueil, tern envoie QUIT et essaie le MX suivant ; les destinataires n'échouent que "
        "si aucun MX n'accepte, avec un avis de non-remise à l'expéditeur. Après une commande, "
        "tern abandonne pour les destinataires concernés, comme pour tout 5xx, et ne réessaie "
        "pas."},
#define RECV_221 8
    {"Nothing to do: tern sent QUIT and the session is over.",
        "Rien à faire : tern a envoyé QUIT et la session est terminée."},
};

const char *
explain_on_receive(const struct explain_result *r, enum explain_lang lang)
{
    int l = lang == EXPLAIN_FR ? 1 : 0;
    int cls = r->basic ? (int)r->code / 100 : r->esc_class;

    switch (r->code) {
    case 221:
        return receive_texts[RECV_221][l];
    case 421:
        return receive_texts[RECV_421][l];
    case 450:
    case 451:
    case 452:
        return receive_texts[RECV_45X][l];
    case 521:
    case 554:
        return receive_texts[RECV_GREETING5][l];
    case 550:
    case 551:
    case 552:
    case 553:
    case 556:
        return receive_texts[RECV_55X][l];
    }
    switch (cls) {
    case 2:
        return receive_texts[RECV_2][l];
    case 3:
        return receive_texts[RECV_3][l];
    case 4:
        return receive_texts[RECV_4][l];
    case 5:
        return receive_texts[RECV_5][l];
    }
    return NULL;
}

/* ---- lookup ------------------------------------------------------------------ */

const struct explain_code *
explain_code_find(unsigned number)
{
    size_t i;

    for (i = 0; i < explain_ncodes; i++)
        if (explain_codes[i].number == number)
            return &explain_codes[i];
    return NULL;
}

const struct explain_esc *
explain_esc_find(unsigned subject, unsigned detail)
{
    size_t i;

    for (i = 0; i < explain_nescs; i++)
        if (explain_escs[i].subject == subject && explain_escs[i].detail == detail)
            return &explain_escs[i];
    return NULL;
}

/* The row of codes.def in this language (French where translated). */
static const struct explain_code *
code_in(const struct explain_code *c, enum explain_lang lang)
{
    size_t i;

    if (lang != EXPLAIN_FR || c == NULL)
        return c;
    for (i = 0; i < sizeof(explain_codes_fr) / sizeof(explain_codes_fr[0]); i++)
        if (explain_codes_fr[i].number == c->number)
            return &explain_codes_fr[i];
    return c;
}

/*
 * A basic code at s[i]: three digits, first 2-5, standing alone as a word.
 * Before it: the start or a space, '(', '"', '\'', '<', ';' or ','
 * (not '.', ':', '=' or '[', which precede IP octets, ports, sizes and PIDs).
 * After it: the end, a space, '-' (a continuation line "550-5.1.1"), or ')', ',', ';', '"'.
 */
static bool
basic_at(const char *s, size_t i)
{
    const char *p = s + i;

    if (i > 0 && strchr(" \t(\"'<;,", s[i - 1]) == NULL)
        return false;
    if (!(p[0] >= '2' && p[0] <= '5') || !isdigit((unsigned char)p[1]) ||
        !isdigit((unsigned char)p[2]))
        return false;
    return p[3] == '\0' || strchr(" \t\r\n-),;\"", p[3]) != NULL;
}

/*
 * An enhanced code at s[i]: class (2, 4, 5 or X), '.', 1-3 digits, '.', 1-3
 * digits, not glued to other digits or letters.  Its length, or 0.
 */
static size_t
esc_at(const char *s, size_t i, int *cls, unsigned *subject, unsigned *detail)
{
    const char *p = s + i;
    size_t n, k;
    unsigned v[2];

    if (i > 0 && (isalnum((unsigned char)s[i - 1]) || s[i - 1] == '.'))
        return 0;
    if (*p == '2' || *p == '4' || *p == '5')
        *cls = *p - '0';
    else if (*p == 'X' || *p == 'x')
        *cls = 0;
    else
        return 0;
    n = 1;
    for (k = 0; k < 2; k++) {
        size_t d = 0;
        if (p[n] != '.')
            return 0;
        n++;
        v[k] = 0;
        while (isdigit((unsigned char)p[n]) && d < 4) {
            v[k] = v[k] * 10 + (unsigned)(p[n] - '0');
            n++;
            d++;
        }
        if (d == 0 || d > 3)
            return 0;
    }
    if (isalnum((unsigned char)p[n]) || (p[n] == '.' && isdigit((unsigned char)p[n + 1])))
        return 0;
    *subject = v[0];
    *detail = v[1];
    return n;
}

static bool
esc_matches(const struct explain_result *r, const char *esc, bool any_class)
{
    char want[16];

    if (esc == NULL)
        return false;
    snprintf(want, sizeof(want), "%u.%u", r->esc_subject, r->esc_detail);
    if (strcmp(esc + 2, want) != 0)
        return false;
    return any_class || r->esc_class == 0 || esc[0] - '0' == r->esc_class;
}

int
explain_lookup(const char *s, struct explain_result *r, char *err, size_t errlen)
{
    size_t len = strlen(s), i, bpos = 0, epos = 0, elen = 0, tpos;
    bool have_basic = false, have_esc = false;
    int cls = 0;
    unsigned subj = 0, det = 0;

    memset(r, 0, sizeof(*r));
    r->class_match = -1;
    snprintf(r->input, sizeof(r->input), "%s", s);
    /* the input as given, without line breaks, for messages */
    for (i = 0; r->input[i]; i++)
        if (r->input[i] == '\r' || r->input[i] == '\n' || r->input[i] == '\t')
            r->input[i] = ' ';

    for (i = 0; i + 3 <= len; i++)
        if (basic_at(s, i)) {
            have_basic = true;
            bpos = i;
            break;
        }
    /* the enhanced code after the basic one; else anywhere (a DSN's "Status: 5.1.1") */
    for (i = have_basic ? bpos + 3 : 0; i < len && !have_esc; i++)
        if ((elen = esc_at(s, i, &cls, &subj, &det)) != 0) {
            have_esc = true;
            epos = i;
        }
    for (i = 0; have_basic && !have_esc && i < bpos; i++)
        if ((elen = esc_at(s, i, &cls, &subj, &det)) != 0) {
            have_esc = true;
            epos = i;
        }

    if (!have_basic && !have_esc) {
        /* a clear word for the near misses: 3.1.1, 1.2.3, 600, 42 */
        size_t n = strspn(s, "0123456789");
        if (n == len && len > 0)
            snprintf(
                err, errlen, "%s: not an SMTP reply code (three digits, 2xx to 5xx)", r->input);
        else if (len >= 5 && isdigit((unsigned char)s[0]) && s[1] == '.' &&
                 strspn(s, "0123456789.") == len)
            snprintf(err, errlen,
                "%s: not an enhanced status code (CLASS.SUBJECT.DETAIL, class 2, 4, 5 or X)",
                r->input);
        else
            snprintf(err, errlen, "%s: no SMTP reply code or enhanced status code found", r->input);
        return -1;
    }
    if (have_basic) {
        r->code =
            (unsigned)((s[bpos] - '0') * 100 + (s[bpos + 1] - '0') * 10 + (s[bpos + 2] - '0'));
        r->basic = explain_code_find(r->code);
        if (r->basic == NULL) {
            char what[16] = "";
            if (len != 3)
                snprintf(what, sizeof(what), " %u is", r->code);
            snprintf(err, errlen,
                "%s:%s not a known SMTP reply code (RFC 5321 and its extensions define 211 to "
                "556)",
                r->input, what);
            return -1;
        }
    }
    if (have_esc) {
        r->has_esc = true;
        r->esc_class = cls;
        r->esc_subject = subj;
        r->esc_detail = det;
        snprintf(r->esc, sizeof(r->esc), "%c.%u.%u", cls ? '0' + cls : 'X', subj, det);
        r->enhanced = explain_esc_find(subj, det);
        if (r->enhanced == NULL && !have_basic) {
            bool alone = strcmp(r->input, r->esc) == 0;
            snprintf(err, errlen, "%s: %s%snot a registered enhanced status code (RFC 3463, IANA)",
                r->input, alone ? "" : r->esc, alone ? "" : " is ");
            return -1;
        }
        if (have_basic && cls != 0)
            r->class_match = cls == (int)r->code / 100;
    }

    /* the text: after the enhanced code when it follows the basic one, else after the code */
    tpos = have_basic ? bpos + 3 : epos + elen;
    if (have_basic && have_esc && epos > bpos && strspn(s + bpos + 3, " -") == epos - bpos - 3)
        tpos = epos + elen;
    while (tpos < len && (s[tpos] == ' ' || s[tpos] == '-' || s[tpos] == '\t'))
        tpos++;
    if (tpos < strlen(r->input))
        r->text = r->input + tpos;

    for (i = 0; i < REPLY__COUNT && r->nsent < EXPLAIN_MAX_SENT; i++) {
        const struct reply_def *d = &reply_table[i];
        if (have_basic && d->code != r->code)
            continue;
        if (have_esc && !esc_matches(r, d->esc, false))
            continue;
        r->sent[r->nsent++] = d;
    }
    return 0;
}

/* ---- human output ------------------------------------------------------------ */

#define WRAP 78

/* Columns taken by the UTF-8 string p[0..n). */
static size_t
columns(const char *p, size_t n)
{
    size_t i, c = 0;

    for (i = 0; i < n; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80)
            c++;
    return c;
}

/* Print s as a paragraph: first line at indent1, the others at indent2, wrapped at WRAP. */
static void
wrap2(FILE *out, int indent1, int indent2, const char *s)
{
    int indent = indent1;
    size_t col;

    while (*s == ' ')
        s++;
    while (*s) {
        const char *line = s, *brk = NULL, *p = s;
        size_t width = (size_t)(WRAP - indent);

        /* take words while they fit; a word longer than the line goes alone */
        for (;;) {
            const char *w = p;
            while (*w && *w != ' ')
                w++;
            if (brk != NULL && columns(line, (size_t)(w - line)) > width)
                break;
            brk = w;
            if (*w == '\0')
                break;
            p = w + 1;
        }
        col = (size_t)(brk - line);
        fprintf(out, "%*s%.*s\n", indent, "", (int)col, line);
        s = brk;
        while (*s == ' ')
            s++;
        indent = indent2;
    }
}

static void
wrap(FILE *out, int indent, const char *s)
{
    wrap2(out, indent, indent, s);
}

static void wrapf(FILE *out, int indent1, int indent2, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
wrapf(FILE *out, int indent1, int indent2, const char *fmt, ...)
{
    char b[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(b, sizeof(b), fmt, ap);
    va_end(ap);
    wrap2(out, indent1, indent2, b);
}

static const char *
colon(enum explain_lang lang)
{
    return lang == EXPLAIN_FR ? " : " : ": ";
}

/* "421", "550 5.1.1", "4.7.1" */
static void
label(const struct explain_result *r, char *b, size_t n)
{
    if (r->basic && r->has_esc)
        snprintf(b, n, "%u %s", r->code, r->esc);
    else if (r->basic)
        snprintf(b, n, "%u", r->code);
    else
        snprintf(b, n, "%s", r->esc);
}

static const char *
name_of(const struct explain_result *r, enum explain_lang lang)
{
    if (r->basic)
        return code_in(r->basic, lang)->name;
    return r->enhanced ? r->enhanced->title : "?";
}

/* The class digit (2-5), or 0 for an "X" enhanced code alone. */
static int
class_of(const struct explain_result *r)
{
    return r->basic ? (int)r->code / 100 : r->esc_class;
}

/* "4xx" / "4.x.x" / "X.x.x" */
static void
class_tag(const struct explain_result *r, char *b, size_t n)
{
    if (r->basic)
        snprintf(b, n, "%dxx", class_of(r));
    else if (r->esc_class)
        snprintf(b, n, "%d.x.x", r->esc_class);
    else
        snprintf(b, n, "X.x.x");
}

static const char *
class_word(const struct explain_result *r, enum explain_lang lang)
{
    return r->basic ? explain_class_name(class_of(r), lang) : esc_class_name(r->esc_class, lang);
}

/* A catalogue reply's text, its %s shown as "...". */
static void
reply_text(const struct reply_def *d, char *b, size_t n)
{
    const char *p = d->text, *pct;
    size_t len = 0;

    b[0] = '\0';
    while ((pct = strstr(p, "%s")) != NULL && len < n) {
        len += (size_t)snprintf(b + len, n - len, "%.*s...", (int)(pct - p), p);
        p = pct + 2;
    }
    if (len < n)
        snprintf(b + len, n - len, "%s", p);
}

static bool
is_outcome(const struct reply_def *d)
{
    return strncmp(d->name, "R_DLV_", 6) == 0;
}

/* The enhanced code's class, subject and detail, as one sentence. */
static void
esc_summary(const struct explain_result *r, enum explain_lang lang, char *b, size_t n)
{
    const char *subj = r->esc_subject < EXPLAIN_NSUBJECTS ? explain_subjects[r->esc_subject] : "?";
    char cls[8];
    const char *semi = lang == EXPLAIN_FR ? " ;" : ";";

    if (r->esc_class)
        snprintf(cls, sizeof(cls), "%d", r->esc_class);
    else
        snprintf(cls, sizeof(cls), "X");
    snprintf(b, n, "%s %s (%s)%s %s %u, %s%s %s %u%s%s.", tx(T_CLASS, lang), cls,
        esc_class_name(r->esc_class, lang), semi, tx(T_SUBJECT, lang), r->esc_subject, subj, semi,
        tx(T_DETAIL, lang), r->esc_detail, r->enhanced ? ", " : "",
        r->enhanced ? r->enhanced->title : "");
}

static void
heading(FILE *out, int indent, enum explain_text t, enum explain_lang lang)
{
    fprintf(out, "\n%*s%s\n", indent, "", tx(t, lang));
}

/* The replies tern sends with this code, or a sentence saying there are none. */
static void
print_sent(FILE *out, const struct explain_result *r, enum explain_lang lang)
{
    char lab[32], text[512];
    const struct reply_def *rel[EXPLAIN_MAX_SENT];
    size_t i, nrel = 0;

    heading(out, 0, T_TERN_SENDS, lang);
    label(r, lab, sizeof(lab));
    if (r->nsent == 0 && !r->basic && r->has_esc && r->esc_class != 0) {
        for (i = 0; i < REPLY__COUNT && nrel < EXPLAIN_MAX_SENT; i++)
            if (esc_matches(r, reply_table[i].esc, true))
                rel[nrel++] = &reply_table[i];
    }
    if (r->nsent == 0) {
        wrapf(out, 4, 4, nrel ? tx(T_RELATED, lang) : tx(T_NEVER_SENT, lang), lab);
    }
    for (i = 0; i < r->nsent + nrel; i++) {
        const struct reply_def *d = i < r->nsent ? r->sent[i] : rel[i - r->nsent];
        reply_text(d, text, sizeof(text));
        if (i > 0 || r->nsent == 0)
            fputc('\n', out);
        wrapf(out, 4, 6, "%u%s%s %s", d->code, d->esc ? " " : "", d->esc ? d->esc : "", text);
        if (is_outcome(d))
            wrapf(out, 4, 4, "%s (%s)%s%s", d->name, tx(T_OUTCOME, lang), colon(lang), d->when);
        else
            wrapf(out, 4, 4, "%s%s%s", d->name, colon(lang), d->when);
    }
}

/* The enhanced code: class, subject, detail, description, reference, warnings. */
static void
print_esc(FILE *out, const struct explain_result *r, enum explain_lang lang)
{
    char b[1024];

    esc_summary(r, lang, b, sizeof(b));
    wrap(out, 4, b);
    if (r->enhanced != NULL) {
        wrap(out, 4, r->enhanced->description);
        fprintf(out, "    %s%s%s\n", tx(T_REFERENCE, lang), colon(lang), r->enhanced->reference);
    } else {
        wrapf(out, 4, 4, tx(T_UNREGISTERED, lang), r->esc);
    }
    if (r->class_match == 0)
        wrapf(out, 4, 4, tx(T_MISMATCH, lang), r->esc_class, (int)r->code / 100);
}

void
explain_print(FILE *out, const struct explain_result *r, enum explain_lang lang)
{
    const struct explain_code *c = code_in(r->basic, lang);
    const char *recv = explain_on_receive(r, lang), *who;
    char tag[16], b[1024];

    class_tag(r, tag, sizeof(tag));
    if (c != NULL) {
        fprintf(out, "SMTP %u %s\n", r->code, c->name);
        fprintf(out, "%s%s%s, %s\n", tx(T_CLASS, lang), colon(lang), tag, class_word(r, lang));
        if (r->has_esc)
            wrapf(out, 0, 4, "%s%s%s%s%s", tx(T_ENHANCED, lang), colon(lang), r->esc,
                r->enhanced ? ", " : "", r->enhanced ? r->enhanced->title : "");
    } else {
        fprintf(out, "%s %s%s%s\n", tx(T_ENHANCED, lang), r->esc, colon(lang), r->enhanced->title);
        fprintf(out, "%s%s%s, %s\n", tx(T_CLASS, lang), colon(lang), tag, class_word(r, lang));
    }
    if (r->text != NULL)
        wrapf(out, 0, 4, "%s%s%s", tx(T_TEXT, lang), colon(lang), r->text);

    heading(out, 0, T_DESCRIPTION, lang);
    if (c != NULL)
        wrap(out, 4, c->meaning);
    else
        print_esc(out, r, lang);
    if (c != NULL && r->has_esc) {
        fprintf(out, "\n%s %s\n", tx(T_ENHANCED, lang), r->esc);
        print_esc(out, r, lang);
    }
    if (c != NULL) {
        heading(out, 0, T_WHEN, lang);
        wrap(out, 4, c->when);
        heading(out, 0, T_RESOLVE, lang);
        wrap(out, 4, c->resolve);
    }
    if (r->basic && (who = explain_actor(r->code, lang)) != NULL) {
        heading(out, 0, T_WHO, lang);
        snprintf(b, sizeof(b), "%s", who);
        b[0] = (char)toupper((unsigned char)b[0]);
        wrapf(out, 4, 4, "%s.", b);
    }
    if (c != NULL) {
        heading(out, 0, T_SEND, lang);
        wrap(out, 4, c->send);
    }
    if (recv != NULL) {
        heading(out, 0, T_RECEIVE, lang);
        wrap(out, 4, recv);
    }
    print_sent(out, r, lang);
}

/* ---- comparison -------------------------------------------------------------- */

static const char *
class_consequence(int cls, enum explain_lang lang)
{
    bool fr = lang == EXPLAIN_FR;

    switch (cls) {
    case 2:
        return fr ? "2xx : la commande a réussi." : "2xx: the command succeeded.";
    case 3:
        return fr ? "3xx : continuer, la commande n'est pas finie."
                  : "3xx: go on, the command is not finished.";
    case 4:
        return fr ? "4xx : la cause est temporaire ; le message reste chez l'expéditeur, qui "
                    "réessaie."
                  : "4xx: the cause is temporary; the message stays with the sender, which "
                    "retries.";
    case 5:
        return fr ? "5xx : en l'état, la commande ne réussira jamais."
                  : "5xx: as it stands, the command will never succeed.";
    }
    return "";
}

static void
summary(const struct explain_result *a, const struct explain_result *b, enum explain_lang lang,
    char *out, size_t n)
{
    char la[32], lb[32], ta[16], tb[16];

    label(a, la, sizeof(la));
    label(b, lb, sizeof(lb));
    class_tag(a, ta, sizeof(ta));
    class_tag(b, tb, sizeof(tb));
    if (strcmp(ta, tb) == 0 && strcmp(class_word(a, lang), class_word(b, lang)) == 0)
        snprintf(out, n, tx(T_BOTH, lang), la, name_of(a, lang), lb, name_of(b, lang), ta,
            class_word(a, lang));
    else
        snprintf(out, n, tx(T_WHILE, lang), la, name_of(a, lang), ta, class_word(a, lang), lb,
            name_of(b, lang), tb, class_word(b, lang));
}

void
explain_compare(const struct explain_result *a, const struct explain_result *b,
    enum explain_lang lang, struct explain_comparison *c)
{
    char la[32], lb[32], ta[16], tb[16], s[EXPLAIN_DIFF_LEN / 2];
    const char *wa, *wb;
    int ca = class_of(a), cb = class_of(b);

    memset(c, 0, sizeof(*c));
    label(a, la, sizeof(la));
    label(b, lb, sizeof(lb));
    class_tag(a, ta, sizeof(ta));
    class_tag(b, tb, sizeof(tb));

    /* 1. class, and what it implies */
    if (strcmp(ta, tb) == 0 && strcmp(class_word(a, lang), class_word(b, lang)) == 0)
        snprintf(s, sizeof(s), tx(T_CLASS_SAME, lang), la, lb, class_word(a, lang), ta);
    else
        snprintf(s, sizeof(s), tx(T_CLASS_DIFF, lang), la, class_word(a, lang), ta, lb,
            class_word(b, lang), tb);
    if (ca == cb)
        snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, "%s %s", s, class_consequence(ca, lang));
    else
        snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, "%s %s %s", s, class_consequence(ca, lang),
            class_consequence(cb, lang));

    /* 2. who must act */
    wa = a->basic ? explain_actor(a->code, lang) : NULL;
    wb = b->basic ? explain_actor(b->code, lang) : NULL;
    if (wa != NULL && wb != NULL)
        snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, tx(T_WHO_DIFF, lang), la, wa, lb, wb);

    /* 3. retry or not */
    snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, tx(T_RETRY_DIFF, lang), la, retry_text(a, lang),
        lb, retry_text(b, lang));

    /* 4. does the server close the connection */
    if (a->basic || b->basic)
        snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, tx(T_CONN_DIFF, lang), la,
            connection_text(a, lang), lb, connection_text(b, lang));

    /* 5. the subjects of the enhanced codes */
    if (a->has_esc && b->has_esc) {
        const char *sa =
            a->esc_subject < EXPLAIN_NSUBJECTS ? explain_subjects[a->esc_subject] : "?";
        const char *sb =
            b->esc_subject < EXPLAIN_NSUBJECTS ? explain_subjects[b->esc_subject] : "?";
        const char *da = a->enhanced ? a->enhanced->title : "?";
        const char *db = b->enhanced ? b->enhanced->title : "?";
        if (a->esc_subject == b->esc_subject)
            snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, tx(T_SUBJECT_SAME, lang), sa, da, db);
        else
            snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, tx(T_SUBJECT_DIFF, lang), a->esc, sa,
                da, b->esc, sb, db);
    } else if (a->has_esc || b->has_esc) {
        const struct explain_result *e = a->has_esc ? a : b;
        snprintf(c->diff[c->ndiff++], EXPLAIN_DIFF_LEN, tx(T_SUBJECT_ONE, lang),
            a->has_esc ? la : lb, e->esc,
            e->esc_subject < EXPLAIN_NSUBJECTS ? explain_subjects[e->esc_subject] : "?",
            e->enhanced ? e->enhanced->title : "?");
    }
}

/* The texts of one side of a comparison; an enhanced code alone borrows tern's own reply. */
struct side {
    const char *description, *when, *resolve, *which;
};

static void
side_of(const struct explain_result *r, enum explain_lang lang, struct side *s)
{
    const struct explain_code *c = code_in(r->basic, lang);

    memset(s, 0, sizeof(*s));
    if (c != NULL) {
        s->description = c->meaning;
        s->when = c->when;
        s->resolve = c->resolve;
        s->which = c->send;
    } else {
        s->description = r->enhanced ? r->enhanced->description : NULL;
        s->which = s->description;
        if (r->nsent > 0) {
            s->when = r->sent[0]->when;
            s->resolve = r->sent[0]->resolve;
        }
    }
}

static void
print_side(FILE *out, const struct explain_result *r, enum explain_lang lang)
{
    struct side s;
    char lab[32], b[1024];

    side_of(r, lang, &s);
    label(r, lab, sizeof(lab));
    fprintf(out, "\n%s %s\n", lab, name_of(r, lang));
    heading(out, 2, T_DESCRIPTION, lang);
    if (s.description != NULL && r->basic)
        wrap(out, 4, s.description);
    if (r->has_esc) {
        esc_summary(r, lang, b, sizeof(b));
        wrap(out, 4, b);
        if (r->enhanced && r->basic)
            wrapf(out, 4, 4, "%s", r->enhanced->description);
        else if (r->enhanced)
            wrap(out, 4, s.description);
    }
    if (s.when != NULL) {
        heading(out, 2, T_WHEN, lang);
        wrap(out, 4, s.when);
    }
    if (s.resolve != NULL) {
        heading(out, 2, T_RESOLVE, lang);
        wrap(out, 4, s.resolve);
    }
}

void
explain_compare_print(FILE *out, const struct explain_result *a, const struct explain_result *b,
    enum explain_lang lang)
{
    struct explain_comparison c;
    struct side sa, sb;
    char la[32], lb[32], s[EXPLAIN_DIFF_LEN];
    size_t i;

    label(a, la, sizeof(la));
    label(b, lb, sizeof(lb));
    wrapf(out, 0, 4, "SMTP %s %s %s %s %s", la, name_of(a, lang), tx(T_VS, lang), lb,
        name_of(b, lang));
    fputc('\n', out);
    summary(a, b, lang, s, sizeof(s));
    wrap(out, 0, s);
    print_side(out, a, lang);
    print_side(out, b, lang);

    explain_compare(a, b, lang, &c);
    heading(out, 0, T_DIFFERENCES, lang);
    for (i = 0; i < c.ndiff; i++)
        wrapf(out, 2, 5, "%zu. %s", i + 1, c.diff[i]);

    side_of(a, lang, &sa);
    side_of(b, lang, &sb);
    heading(out, 0, T_WHICH, lang);
    if (sa.which)
        wrapf(out, 2, 4, "%s (%s)%s%s", la, name_of(a, lang), colon(lang), sa.which);
    if (sb.which)
        wrapf(out, 2, 4, "%s (%s)%s%s", lb, name_of(b, lang), colon(lang), sb.which);
}

/* ---- JSON -------------------------------------------------------------------- */

void
explain_json_string(FILE *out, const char *s)
{
    const unsigned char *p;

    fputc('"', out);
    for (p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

/* A small pretty-printing JSON writer: two spaces a level, keys in the order written. */
struct jw {
    FILE *out;
    int depth;
    bool first[16];
};

static void
jw_key(struct jw *j, const char *key)
{
    if (!j->first[j->depth])
        fputc(',', j->out);
    j->first[j->depth] = false;
    fprintf(j->out, "\n%*s", 2 * j->depth, "");
    if (key != NULL) {
        explain_json_string(j->out, key);
        fputs(": ", j->out);
    }
}

static void
jw_open(struct jw *j, const char *key, char brace)
{
    if (j->depth > 0)
        jw_key(j, key);
    fputc(brace, j->out);
    j->depth++;
    j->first[j->depth] = true;
}

static void
jw_close(struct jw *j, char brace)
{
    bool empty = j->first[j->depth];

    j->depth--;
    if (!empty)
        fprintf(j->out, "\n%*s", 2 * j->depth, "");
    fputc(brace, j->out);
}

static void
jw_str(struct jw *j, const char *key, const char *v)
{
    jw_key(j, key);
    if (v == NULL)
        fputs("null", j->out);
    else
        explain_json_string(j->out, v);
}

static void
jw_int(struct jw *j, const char *key, long v, bool null)
{
    jw_key(j, key);
    if (null)
        fputs("null", j->out);
    else
        fprintf(j->out, "%ld", v);
}

static void
jw_bool(struct jw *j, const char *key, int v)
{
    jw_key(j, key);
    fputs(v < 0 ? "null" : v ? "true" : "false", j->out);
}

static void
jw_result(struct jw *j, const char *key, const struct explain_result *r, enum explain_lang lang)
{
    const struct explain_code *c = code_in(r->basic, lang);
    int cls = class_of(r);
    char text[512];
    size_t i;

    jw_open(j, key, '{');
    jw_str(j, "input", r->input);
    jw_str(j, "lang", lang == EXPLAIN_FR ? "fr" : "en");
    jw_int(j, "code", (long)r->code, r->basic == NULL);
    jw_int(j, "class", cls, cls == 0);
    jw_str(j, "class_name", cls ? class_word(r, lang) : NULL);
    jw_str(j, "name", c ? c->name : NULL);
    jw_str(j, "meaning", c ? c->meaning : NULL);
    jw_str(j, "when", c ? c->when : NULL);
    jw_str(j, "resolve", c ? c->resolve : NULL);
    jw_str(j, "when_to_send", c ? c->send : NULL);
    jw_str(j, "text", r->text);
    if (r->has_esc) {
        jw_open(j, "enhanced", '{');
        jw_str(j, "code", r->esc);
        jw_int(j, "class", r->esc_class, r->esc_class == 0);
        jw_str(j, "class_name", esc_class_name(r->esc_class, lang));
        jw_int(j, "subject", (long)r->esc_subject, false);
        jw_int(j, "detail", (long)r->esc_detail, false);
        jw_str(j, "subject_title",
            r->esc_subject < EXPLAIN_NSUBJECTS ? explain_subjects[r->esc_subject] : NULL);
        jw_str(j, "title", r->enhanced ? r->enhanced->title : NULL);
        jw_str(j, "description", r->enhanced ? r->enhanced->description : NULL);
        jw_str(j, "reference", r->enhanced ? r->enhanced->reference : NULL);
        jw_bool(j, "registered", r->enhanced != NULL);
        jw_bool(j, "class_matches", r->class_match);
        jw_close(j, '}');
    } else {
        jw_str(j, "enhanced", NULL);
    }
    jw_str(j, "who_must_act", r->basic ? explain_actor(r->code, lang) : NULL);
    jw_str(j, "retry", retry_text(r, lang));
    jw_str(j, "connection", connection_text(r, lang));
    jw_str(j, "tern_receives", explain_on_receive(r, lang));
    jw_open(j, "tern_sends", '[');
    for (i = 0; i < r->nsent; i++) {
        const struct reply_def *d = r->sent[i];
        reply_text(d, text, sizeof(text));
        jw_open(j, NULL, '{');
        jw_str(j, "id", d->name);
        jw_int(j, "code", d->code, false);
        jw_str(j, "enhanced", d->esc);
        jw_str(j, "text", text);
        jw_str(j, "kind", is_outcome(d) ? "delivery outcome" : "reply");
        jw_str(j, "meaning", d->meaning);
        jw_str(j, "when", d->when);
        jw_str(j, "resolve", d->resolve);
        jw_close(j, '}');
    }
    jw_close(j, ']');
    jw_close(j, '}');
}

void
explain_print_json(FILE *out, const struct explain_result *r, enum explain_lang lang)
{
    struct jw j = {out, 0, {false}};

    jw_result(&j, NULL, r, lang);
    fputc('\n', out);
}

void
explain_compare_print_json(FILE *out, const struct explain_result *a,
    const struct explain_result *b, enum explain_lang lang)
{
    struct jw j = {out, 0, {false}};
    struct explain_comparison c;
    struct side sa, sb;
    char s[EXPLAIN_DIFF_LEN], la[32], lb[32];
    size_t i;

    explain_compare(a, b, lang, &c);
    summary(a, b, lang, s, sizeof(s));
    side_of(a, lang, &sa);
    side_of(b, lang, &sb);
    label(a, la, sizeof(la));
    label(b, lb, sizeof(lb));
    jw_open(&j, NULL, '{');
    jw_str(&j, "lang", lang == EXPLAIN_FR ? "fr" : "en");
    jw_result(&j, "a", a, lang);
    jw_result(&j, "b", b, lang);
    jw_str(&j, "summary", s);
    jw_open(&j, "differences", '[');
    for (i = 0; i < c.ndiff; i++)
        jw_str(&j, NULL, c.diff[i]);
    jw_close(&j, ']');
    jw_open(&j, "when_to_use", '[');
    jw_open(&j, NULL, '{');
    jw_str(&j, "code", la);
    jw_str(&j, "text", sa.which);
    jw_close(&j, '}');
    jw_open(&j, NULL, '{');
    jw_str(&j, "code", lb);
    jw_str(&j, "text", sb.which);
    jw_close(&j, '}');
    jw_close(&j, ']');
    jw_close(&j, '}');
    fputc('\n', out);
}
