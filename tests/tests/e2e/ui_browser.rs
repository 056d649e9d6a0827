//! The web UI in a real browser (issue 10, item 5): Debian's chromium,
//! headless, driven through chromedriver (WebDriver) with fantoccini,
//! against a real `warren` process. Logs in (a wrong password and a user
//! without a management tag are refused), publishes through the UI, sees
//! the queue and its count, purges it, logs out.
//!
//! chromium and chromedriver come from Debian's packages: if chromedriver
//! is missing, the test installs them with apt-get (as the pika tests
//! install pika), and fails saying so if it cannot.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use warren_e2e::http::request;
use warren_e2e::{eventually, within};

/// `guest:guest`.
const GUEST: &str = "Z3Vlc3Q6Z3Vlc3Q=";

/// Finds chromedriver, installing Debian's chromium and chromium-driver
/// if it is missing.
fn chromedriver() -> anyhow::Result<String> {
    let found = |name: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(path) = found("chromedriver") {
        return Ok(path);
    }
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver",
        ])
        .stdout(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !installed.success() {
        bail!("chromedriver is missing and apt-get could not install chromium and chromium-driver");
    }
    found("chromedriver").context("chromedriver still missing after installing chromium-driver")
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> anyhow::Result<Driver> {
    let path = tokio::task::spawn_blocking(chromedriver).await??;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting chromedriver")?;
    let driver = Driver { child, port };
    eventually("chromedriver listening", Duration::from_secs(20), || async move {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    Ok(driver)
}

async fn browser(driver: &Driver) -> anyhow::Result<Client> {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .context("starting a chromium session")?;
    Ok(client)
}

/// The text of the first element `css` selects, once it is there.
async fn text_of(client: &Client, css: &str) -> anyhow::Result<String> {
    let element = within(&format!("element {css}"), client.wait().for_element(Locator::Css(css))).await?;
    Ok(element.text().await?)
}

/// Waits until the text of `css` is `expected`.
async fn wait_text(client: &Client, css: &str, expected: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last == expected {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{css}: expected {expected:?}, last saw {last:?}")
}

async fn log_in(client: &Client, user: &str, password: &str) -> anyhow::Result<()> {
    let form = within("login form", client.wait().for_element(Locator::Id("login-form"))).await?;
    let name = form.find(Locator::Id("login-user")).await?;
    name.clear().await?;
    name.send_keys(user).await?;
    let pass = form.find(Locator::Id("login-pass")).await?;
    pass.clear().await?;
    pass.send_keys(password).await?;
    form.find(Locator::Id("login-submit")).await?.click().await?;
    Ok(())
}

async fn screenshot(client: &Client, name: &str) {
    if let Ok(png) = client.screenshot().await {
        let dir = warren_e2e::target_dir().join("ui-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_logs_in_publishes_shows_the_queue_purges_it_and_logs_out() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api: SocketAddr = broker.http_addr().context("no http address")?;
    // A queue to work on, and a user without a management tag.
    let created = request(api, "PUT", "/api/queues/%2F/ui-q", GUEST, "{}").await?;
    anyhow::ensure!(created.status == 201, "{}", created.body);
    let user = request(api, "PUT", "/api/users/plain", GUEST, r#"{"password":"pw","tags":""}"#).await?;
    anyhow::ensure!(user.status == 201, "{}", user.body);

    let driver = start_driver().await?;
    let client = browser(&driver).await?;
    let outcome = drive(&client, api).await;
    screenshot(&client, "last").await;
    let _ = client.close().await;
    outcome
}

async fn drive(client: &Client, api: SocketAddr) -> anyhow::Result<()> {
    client.goto(&format!("http://{api}/")).await?;

    // Refused: a wrong password, then a user without a management tag.
    log_in(client, "guest", "wrong").await?;
    wait_text(client, "#login-error", "Login refused: Login failed").await?;
    log_in(client, "plain", "pw").await?;
    wait_text(client, "#login-error", "Login refused: Not management user").await?;

    log_in(client, "guest", "guest").await?;
    wait_text(client, "[data-testid=who]", "guest (administrator)").await?;
    let ready = text_of(client, "[data-testid=total-ready]").await?;
    assert_eq!(ready, "0");
    screenshot(client, "overview").await;

    // The queue list shows ui-q; its page publishes a message.
    client.goto(&format!("http://{api}/#/queues")).await?;
    wait_text(client, "[data-testid=ready-ui-q]", "0").await?;
    client
        .wait()
        .for_element(Locator::Css("[data-testid=queue-link-ui-q]"))
        .await?
        .click()
        .await?;
    wait_text(client, "[data-testid=queue-title]", "ui-q").await?;
    let payload = client.find(Locator::Css("[data-testid=publish-payload]")).await?;
    payload.send_keys("hello from the browser").await?;
    client
        .find(Locator::Css("[data-testid=publish]"))
        .await?
        .click()
        .await?;
    wait_text(client, "#flash", "Message published").await?;
    wait_text(client, "[data-testid=queue-ready]", "1").await?;
    screenshot(client, "queue").await;

    // The list shows the count too.
    client.goto(&format!("http://{api}/#/queues")).await?;
    wait_text(client, "[data-testid=ready-ui-q]", "1").await?;

    // Get it back (requeued), then purge.
    client.goto(&format!("http://{api}/#/queue/%2F/ui-q")).await?;
    wait_text(client, "[data-testid=queue-ready]", "1").await?;
    client.find(Locator::Css("[data-testid=get]")).await?.click().await?;
    wait_text(client, "[data-testid=got-payload]", "hello from the browser").await?;
    client.find(Locator::Css("[data-testid=purge]")).await?.click().await?;
    wait_text(client, "#flash", "Queue ui-q purged").await?;
    wait_text(client, "[data-testid=queue-ready]", "0").await?;
    let queue = warren_e2e::http::get(api, "/api/queues/%2F/ui-q", GUEST)
        .await?
        .json()?;
    assert_eq!(queue["messages"], 0, "the broker agrees: {queue}");

    // Log out: the login form again, and the API calls stop.
    client.find(Locator::Css("[data-testid=logout]")).await?.click().await?;
    within(
        "login form after logout",
        client.wait().for_element(Locator::Id("login-form")),
    )
    .await?;
    let form_shown = client.find(Locator::Id("login")).await?.attr("hidden").await?.is_none();
    assert!(form_shown, "the login form is visible after logging out");
    Ok(())
}
