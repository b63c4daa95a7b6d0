import { withLab } from './lab';
async function main(): Promise<void> {
  await withLab({ prefix: 'f6try' }, async (lab) => {
    await lab.startServer('vsftpd');
    const r = await lab.runAsync(lab.ns.client, ['curl', '-sS', '-w', '%{size_download} %{time_total}\n', '--limit-rate', '64k', '--max-time', '1', '-o', '/dev/null', 'ftp://198.18.2.10/big.bin']);
    console.log(r);
    const r2 = await lab.runAsync(lab.ns.client, ['sh', '-c', 'ls -la /tmp/f6try*/ftp']);
    console.log(r2.stdout);
  });
}
void main();
