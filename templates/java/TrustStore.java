// hkube java template: makes a PKCS12 trust store for the build's Maven (or other JVM) downloads:
// the JDK's own CA certificates plus every certificate of a PEM bundle.
// Usage: java TrustStore.java BUNDLE.pem OUT.p12   (password "changeit")
import java.io.File;
import java.io.FileOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.Collections;

public class TrustStore {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: java TrustStore.java BUNDLE.pem OUT.p12");
            System.exit(2);
        }
        char[] password = "changeit".toCharArray();
        KeyStore out = KeyStore.getInstance("PKCS12");
        out.load(null, password);
        int jdk = 0;
        Path cacerts = Paths.get(System.getProperty("java.home"), "lib", "security", "cacerts");
        if (Files.exists(cacerts)) {
            KeyStore in = KeyStore.getInstance(cacerts.toFile(), password);
            for (String alias : Collections.list(in.aliases())) {
                if (in.isCertificateEntry(alias)) {
                    out.setCertificateEntry("jdk-" + alias, in.getCertificate(alias));
                    jdk++;
                }
            }
        }
        int added = 0;
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        try (InputStream pem = Files.newInputStream(Paths.get(args[0]))) {
            for (Certificate cert : factory.generateCertificates(pem)) {
                if (out.getCertificateAlias(cert) == null) {
                    out.setCertificateEntry("hkube-" + added, cert);
                    added++;
                }
            }
        }
        File target = new File(args[1]);
        try (OutputStream os = new FileOutputStream(target)) {
            out.store(os, password);
        }
        System.out.println("hkube: trust store " + target + ": " + jdk + " JDK certificates, " + added
                + " more from " + args[0]);
    }
}
