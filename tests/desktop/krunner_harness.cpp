// KRunner's own runner machinery run on a query, as KRunner 5.27 runs it when a person types: the
// RunnerManager of libKF5Runner (the framework the krunner program is built on) loads the runners
// installed in $XDG_DATA_DIRS (D-Bus runners from krunner/dbusplugins/*.desktop), asks them for matches
// and runs the first one. Used by tests/desktop/open_in_eog_check.py --via krunner-framework; built by
// tests/it/eog_plugin.rs.
//
//     krunner_harness RUNNER_ID QUERY
//
// Prints "runners: ID..." (the runners loaded), then one line per match of RUNNER_ID,
// "match<TAB>id<TAB>text<TAB>subtext<TAB>relevance<TAB>icon (WxH or none)<TAB>urls", then runs the
// first match's default action (KRunner's Enter) and prints "ran<TAB>id" once the call is on the bus.
// Exit status 0; 1 with the reason on stderr when the runner is not loaded, nothing matches or no
// answer comes within 60 s.
#include <KRunner/AbstractRunner>
#include <KRunner/QueryMatch>
#include <KRunner/RunnerManager>

#include <QDBusConnection>
#include <QDBusConnectionInterface>
#include <QGuiApplication>
#include <QIcon>
#include <QTimer>
#include <QUrl>

#include <cstdio>

static void out(const QString &line)
{
    std::printf("%s\n", line.toUtf8().constData());
    std::fflush(stdout);
}

static int failWith(const QString &why)
{
    std::fprintf(stderr, "krunner_harness: %s\n", why.toUtf8().constData());
    return 1;
}

int main(int argc, char **argv)
{
    // QIcon from the matches' icon data needs a GUI application; the offscreen platform needs no display.
    qputenv("QT_QPA_PLATFORM", "offscreen");
    QGuiApplication app(argc, argv);
    if (argc != 3) {
        return failWith(QStringLiteral("usage: krunner_harness RUNNER_ID QUERY"));
    }
    const QString runnerId = QString::fromUtf8(argv[1]);
    const QString query = QString::fromUtf8(argv[2]);

    Plasma::RunnerManager manager;
    int status = 1;
    QTimer deadline;
    deadline.setSingleShot(true);
    QObject::connect(&deadline, &QTimer::timeout, &app, [&] {
        status = failWith(QStringLiteral("no answer to %1 within 60 s").arg(query));
        app.quit();
    });
    QObject::connect(&manager, &Plasma::RunnerManager::queryFinished, &app, [&] {
        // The runners are loaded when the first query comes.
        QStringList loaded;
        for (Plasma::AbstractRunner *runner : manager.runners()) {
            loaded << runner->id();
        }
        out(QStringLiteral("runners: ") + loaded.join(QLatin1Char(' ')));
        QList<Plasma::QueryMatch> matches;
        for (const Plasma::QueryMatch &m : manager.matches()) {
            if (m.runner() && m.runner()->id() == runnerId) {
                matches << m;
            }
        }
        for (const Plasma::QueryMatch &m : matches) {
            const QSize icon = m.icon().isNull() ? QSize() : m.icon().availableSizes().value(0);
            QStringList urls;
            for (const QUrl &u : m.urls()) {
                urls << u.toString();
            }
            out(QStringList{QStringLiteral("match"), m.id(), m.text(), m.subtext(),
                            QString::number(m.relevance()),
                            icon.isValid() ? QStringLiteral("%1x%2").arg(icon.width()).arg(icon.height()) : QStringLiteral("none"),
                            urls.join(QLatin1Char(' '))}
                    .join(QLatin1Char('\t')));
        }
        if (!loaded.contains(runnerId)) {
            status = failWith(QStringLiteral("KRunner did not load the runner %1").arg(runnerId));
        } else if (matches.isEmpty()) {
            status = failWith(QStringLiteral("%1 matched nothing for %2").arg(runnerId, query));
        } else {
            manager.run(matches.first());
            // The runner's Run goes out without waiting for its reply; a round trip on the same connection
            // afterwards returns once it is on the bus (a connection sends its messages in order).
            QDBusConnection::sessionBus().interface()->isServiceRegistered(QStringLiteral("org.freedesktop.DBus"));
            out(QStringLiteral("ran\t") + matches.first().id());
            status = 0;
        }
        manager.matchSessionComplete();
        deadline.stop();
        app.quit();
    });
    deadline.start(60000);
    manager.launchQuery(query);
    app.exec();
    return status;
}
